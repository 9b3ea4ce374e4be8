// The demo page in both languages, against a daemon with Chinese templates, letter codes and
// the origin-bound `@domain #code` line. A browser set to Chinese gets the Chinese page and a
// Chinese SMS, whose code arrives through the WebOTP API (headless Chromium receives no SMS, so
// a stand-in plays Chrome on Android: it hands the page the code of the SMS whose last line is
// bound to the domain); then the person switches to English. A browser set to English switches
// to Chinese before sending, reads the wrong-code answer in Chinese and types the code in lower
// case, which the check accepts.
import { check, env, newPage, run, screenshot, smsFor, statusShows } from "./lib.mjs";

const BASE = env("VERIFYD_URL");
const [ZH_PHONE, EN_PHONE] = env("PHONES").split(",");
const DOMAIN = env("OTP_DOMAIN");

// The code the SMS to `phone` binds to DOMAIN, as WebOTP reads it: the message's last line.
async function boundCode(phone) {
  const sms = await smsFor(phone);
  const last = /\n@(\S+) #(\S+)$/.exec(sms.text);
  return last && last[1] === DOMAIN ? last[2] : null;
}

await run(async (browser) => {
  // A Chinese browser.
  const zh = await newPage(browser, { width: 390, height: 760 }, "zh-CN");
  const asked = [];
  await zh.context.exposeFunction("smsOneTimeCode", async (transport) => {
    asked.push(transport);
    return boundCode(ZH_PHONE);
  });
  await zh.context.addInitScript(() => {
    window.OTPCredential = function OTPCredential() {};
    Object.defineProperty(navigator, "credentials", {
      value: {
        async get(options) {
          if (!options || !options.otp) throw new TypeError("only OTP requests are simulated");
          const code = await window.smsOneTimeCode(options.otp.transport.join(","));
          if (!code) throw new DOMException("no SMS for this origin", "AbortError");
          return { type: "otp", id: "", code };
        },
      },
    });
  });
  let page = zh.page;
  await page.goto(`${BASE}/`);
  await page.getByRole("heading", { name: "验证您的手机号码" }).waitFor();
  check(await page.evaluate(() => document.documentElement.lang) === "zh-CN", "html lang is zh-CN");
  check(await page.getByRole("button", { name: "简体中文" }).getAttribute("aria-pressed") === "true",
    "the Chinese button shows it is on");
  await screenshot(page, "zh-start");

  await page.getByLabel("手机号码").fill(ZH_PHONE);
  await page.getByRole("button", { name: "发送验证码" }).click();
  // Nobody types: WebOTP fills the code in and the page checks it.
  await statusShows(page, new RegExp(`验证成功：\\${ZH_PHONE}。`));
  check(JSON.stringify(asked) === '["sms"]', `WebOTP asked ${JSON.stringify(asked)}`);
  const sms = await smsFor(ZH_PHONE);
  check(sms.text.startsWith("您的验证码是"), `the SMS is in Chinese: ${JSON.stringify(sms.text)}`);
  check(sms.text.endsWith(`\n@${DOMAIN} #${sms.code}`), `origin-bound last line: ${JSON.stringify(sms.text)}`);
  check(/^[2-9A-HJKMNP-Z]{6}$/.test(sms.code), `a letter code without look-alikes: ${sms.code}`);
  const verified = page.getByRole("region", { name: "已验证" });
  await verified.waitFor();
  check(await page.locator("#verified-phone").textContent() === ZH_PHONE, "the number read back");
  await screenshot(page, "zh-verified");

  // Switching to English changes the page, the region's name and the document's language.
  await page.getByRole("button", { name: "English" }).click();
  await page.getByRole("heading", { name: "Verify your phone number" }).waitFor();
  await page.getByRole("region", { name: "Verified" }).waitFor();
  check(await page.evaluate(() => document.documentElement.lang) === "en", "html lang is en");
  check(await page.getByRole("button", { name: "English" }).getAttribute("aria-pressed") === "true",
    "the English button shows it is on");
  await screenshot(page, "zh-switched-to-en");
  check(zh.problems.length === 0, zh.problems.join("; "));
  await zh.context.close();

  // An English browser whose person reads Chinese better.
  const en = await newPage(browser, { width: 390, height: 760 }, "en-US");
  page = en.page;
  await page.goto(`${BASE}/`);
  await page.getByRole("heading", { name: "Verify your phone number" }).waitFor();
  await page.getByRole("button", { name: "简体中文" }).click();
  await page.getByRole("heading", { name: "验证您的手机号码" }).waitFor();
  check(await page.getByLabel("短信验证码").getAttribute("inputmode") === "text",
    "letter codes get a letter keyboard");
  check(await page.getByLabel("短信验证码").getAttribute("autocomplete") === "one-time-code",
    "the code field offers one-time codes");
  await page.getByLabel("手机号码").fill(EN_PHONE);
  await page.getByRole("button", { name: "发送验证码" }).click();
  await statusShows(page, new RegExp(`验证码已发送至 \\${EN_PHONE}，5 分钟内有效。`));
  check(/\d+ 秒后可以重新获取验证码。/.test(await page.locator("#countdown").textContent()),
    "the countdown is in Chinese");
  const { code, text } = await smsFor(EN_PHONE);
  check(text.startsWith("您的验证码是"), `the page's language chose the SMS: ${JSON.stringify(text)}`);
  const wrong = code.slice(0, -1) + (code.at(-1) === "A" ? "B" : "A");
  await page.getByLabel("短信验证码").fill(wrong);
  await page.keyboard.press("Enter");
  await statusShows(page, /验证码错误，还可以尝试 4 次。/);
  await screenshot(page, "en-to-zh-wrong-code");
  await page.getByLabel("短信验证码").fill(code.toLowerCase());
  await page.getByRole("button", { name: "验证", exact: true }).click();
  await statusShows(page, new RegExp(`验证成功：\\${EN_PHONE}。`));
  await page.getByRole("region", { name: "已验证" }).waitFor();
  await screenshot(page, "en-to-zh-verified");
  check(en.problems.length === 0, en.problems.join("; "));
});
