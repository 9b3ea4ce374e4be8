// A customer's page on another origin calls verifyd with credentials: "include". From an origin
// verifyd allows, the whole flow works and the session cookie travels (both origins are on
// 127.0.0.1, so they are the same site and SameSite=Lax lets the cookie through); from any other
// origin the browser refuses, and nothing is sent.
import { check, codeFor, env, newPage, readOutbox, run, screenshot, statusShows } from "./lib.mjs";

const API = env("VERIFYD_URL");
const ALLOWED_PAGE = env("ALLOWED_PAGE");
const OTHER_PAGE = env("OTHER_PAGE");
const [PHONE, REFUSED_PHONE] = env("PHONES").split(",");

await run(async (browser) => {
  const allowed = await newPage(browser, { width: 390, height: 700 });
  let page = allowed.page;
  await page.goto(ALLOWED_PAGE);
  await page.getByLabel("Phone number").fill(PHONE);
  await page.getByRole("button", { name: "Send code" }).click();
  await statusShows(page, new RegExp(`Code sent to \\${PHONE}`));
  await page.getByLabel("Code from the SMS").fill(await codeFor(PHONE));
  await page.getByRole("button", { name: "Verify" }).click();
  await statusShows(page, /Verified:/);
  await page.getByRole("region", { name: "Verified" }).waitFor();
  check(await page.locator("#verified-phone").textContent() === PHONE,
    "GET /v1/session across origins reads the number back");
  const cookies = await allowed.context.cookies(API);
  check(cookies.some((c) => c.name === "sessionid"), "the API's cookie is stored for its origin");
  await screenshot(page, "allowed-origin");

  const other = await newPage(browser, { width: 390, height: 700 });
  page = other.page;
  await page.goto(OTHER_PAGE);
  await page.getByLabel("Phone number").fill(REFUSED_PHONE);
  // The browser refuses the call itself (no Access-Control-Allow-Origin for this origin); the
  // page can only say that verifyd was not reached.
  const refusal = page.waitForEvent("requestfailed",
    (r) => r.url() === `${API}/v1/verifications` && r.method() === "POST");
  await page.getByRole("button", { name: "Send code" }).click();
  await refusal;
  await statusShows(page, /\(unreachable\)/);
  await screenshot(page, "other-origin");
  check(!readOutbox().some((m) => m.to === REFUSED_PHONE), "no code for a refused origin");
});
