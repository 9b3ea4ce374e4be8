// The demo page's happy path on a phone-sized screen: a bad number, then a real one; a wrong
// code and the attempts left; the right code, "Verified" and the number read back from the
// session, also after a reload.
import { check, codeFor, env, newPage, run, screenshot, statusShows } from "./lib.mjs";

const BASE = env("VERIFYD_URL");
const PHONE = env("PHONE");

await run(async (browser) => {
  const { context, page, problems } = await newPage(browser, { width: 390, height: 760 });
  await page.goto(`${BASE}/`);
  await page.getByRole("heading", { name: "Verify your phone number" }).waitFor();
  check(problems.length === 0, `on load: ${problems.join("; ")}`);
  await screenshot(page, "start");

  // Keyboard only: type into the labelled field, submit with Enter. The API's error shows.
  await page.getByLabel("Phone number").fill("12345");
  await page.getByLabel("Phone number").press("Enter");
  await statusShows(page, /\(invalid_phone\)/);
  await screenshot(page, "invalid-phone");

  await page.getByLabel("Phone number").fill(PHONE);
  await page.getByRole("button", { name: "Send code" }).click();
  await statusShows(page, new RegExp(`Code sent to \\${PHONE}\\. It is valid for 5 minutes`));
  const countdown = await page.locator("#countdown").textContent();
  const left = Number(/in (\d+) s/.exec(countdown)?.[1]);
  check(left >= 50 && left <= 60, `resend countdown from resend_in, got "${countdown}"`);
  check(await page.getByRole("button", { name: "Send a new code" }).isDisabled(),
    "sending again is disabled during the countdown");
  check(await page.evaluate(() => document.activeElement.id) === "code",
    "focus moves to the code field");
  await screenshot(page, "code-sent");

  const code = await codeFor(PHONE);
  const wrong = code.slice(0, -1) + String((Number(code.at(-1)) + 1) % 10);
  await page.getByLabel("Code from the SMS").fill(wrong);
  await page.keyboard.press("Enter");
  await statusShows(page, /Wrong code\. 4 attempts left\./);
  await screenshot(page, "wrong-code");

  await page.getByLabel("Code from the SMS").fill(code);
  await page.getByRole("button", { name: "Verify" }).click();
  await statusShows(page, new RegExp(`Verified: \\${PHONE}\\.`));
  const verified = page.getByRole("region", { name: "Verified" });
  await verified.waitFor();
  check(await page.locator("#verified-phone").textContent() === PHONE,
    "the number read back from GET /v1/session");
  check(await page.evaluate(() => document.activeElement.id) === "verified",
    "focus moves to the result");
  check(!(await page.getByLabel("Code from the SMS").isVisible()), "the code form is gone");
  await screenshot(page, "verified");

  // The session cookie: HttpOnly (the page cannot read it), SameSite=Lax, kept across a reload.
  const cookies = await context.cookies(BASE);
  const session = cookies.find((c) => c.name === "sessionid");
  check(session && session.httpOnly && session.sameSite === "Lax", `cookie ${JSON.stringify(session)}`);
  check(await page.evaluate(() => document.cookie) === "", "scripts cannot see the session cookie");
  await page.reload();
  await verified.waitFor();
  check(await page.locator("#verified-phone").textContent() === PHONE, "still verified after a reload");
  await screenshot(page, "after-reload");

  await page.setViewportSize({ width: 900, height: 640 });
  await screenshot(page, "desktop");
  check(problems.length === 0, problems.join("; "));
});
