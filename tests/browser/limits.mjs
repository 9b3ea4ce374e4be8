// The page's other outcomes, against a daemon with a 6 s code lifetime, a 1 s resend interval
// and 2 attempts: an expired code, the last attempt used up, and a refused resend whose
// countdown comes from Retry-After.
import { check, codeFor, env, newPage, run, screenshot, sleep, statusShows } from "./lib.mjs";

const BASE = env("VERIFYD_URL");
const [SLOW, GUESSER] = env("PHONES").split(",");

await run(async (browser) => {
  const { page, problems } = await newPage(browser, { width: 390, height: 700 });
  await page.goto(`${BASE}/`);
  const phone = page.getByLabel("Phone number");
  const send = page.locator("#send");
  const codeField = page.getByLabel("Code from the SMS");

  await phone.fill(SLOW);
  await send.click();
  await statusShows(page, /Code sent/);
  const code = await codeFor(SLOW);
  await sleep(6_500);
  await codeField.fill(code);
  await codeField.press("Enter");
  await statusShows(page, /This code has expired\. Ask for a new one\./);
  await screenshot(page, "expired");

  await page.locator("#send:enabled").waitFor();
  await phone.fill(GUESSER);
  await send.click();
  await statusShows(page, new RegExp(`Code sent to \\${GUESSER}`));
  const right = await codeFor(GUESSER);
  const wrong = right === "000000" ? "111111" : "000000";
  await codeField.fill(wrong);
  await codeField.press("Enter");
  await statusShows(page, /Wrong code\. 1 attempt left\./);
  await codeField.fill(wrong);
  await codeField.press("Enter");
  await statusShows(page, /Too many wrong codes/);
  await screenshot(page, "max-attempts");

  // Resending does not buy more guesses: verifyd answers 429 with Retry-After, and the page
  // counts down from it.
  await page.locator("#send:enabled").waitFor();
  await send.click();
  await statusShows(page, /\(too_many_attempts\)/);
  const countdown = page.locator("#countdown");
  await countdown.filter({ hasText: /You can ask for a new code in \d+ s\./ }).waitFor();
  check(await send.isDisabled(), "sending is disabled while Retry-After runs");
  await screenshot(page, "retry-after");
  check(problems.length === 0, problems.join("; "));
});
