// Cross-site request forgery from a real browser. The victim verifies their number on verifyd's
// own page (http://127.0.0.1:…), then opens an attacker's page on another site
// (http://localhost:…) with an <img> and a link pointing at GET /sms_send/ for the attacker's
// numbers. verifyd refuses both, nothing is sent, and the victim's session still holds the
// victim's number.
import { check, codeFor, env, newPage, readOutbox, run, screenshot, statusShows } from "./lib.mjs";

const API = env("VERIFYD_URL");
const ATTACK_PAGE = env("ATTACK_PAGE");
const VICTIM = env("VICTIM");
const [PIXEL_PHONE, LINK_PHONE] = env("ATTACKER_PHONES").split(",");

await run(async (browser) => {
  const { page, problems } = await newPage(browser, { width: 390, height: 760 });
  await page.goto(`${API}/`);
  await page.getByLabel("Phone number").fill(VICTIM);
  await page.getByRole("button", { name: "Send code" }).click();
  await statusShows(page, new RegExp(`Code sent to \\${VICTIM}`));
  await page.getByLabel("Code from the SMS").fill(await codeFor(VICTIM));
  await page.getByRole("button", { name: "Verify" }).click();
  await statusShows(page, /Verified:/);
  check(problems.length === 0, `on the demo page: ${problems.join("; ")}`);

  // The attacker's page loads its <img> as soon as it is opened. The browser may withhold a
  // JSON answer to an image from the page (opaque response blocking), so the Rust test reads
  // verifyd's own count of 403s; here it is enough that the request went out.
  const pixel = page.waitForRequest((r) => r.url().includes("/sms_send/") &&
    r.url().includes(encodeURIComponent(PIXEL_PHONE)));
  await page.goto(ATTACK_PAGE);
  const pixelRequest = await pixel;
  const pixelHeaders = await pixelRequest.allHeaders();
  const pixelAnswer = await pixelRequest.response();
  console.log(`img request: sec-fetch-site=${pixelHeaders["sec-fetch-site"]} ` +
    `referer=${pixelHeaders["referer"]} answer=${pixelAnswer?.status() ?? pixelRequest.failure()?.errorText}`);
  if (pixelAnswer) check(pixelAnswer.status() === 403, `the <img> request got ${pixelAnswer.status()}`);
  await screenshot(page, "attacker-page");

  // A click on the attacker's link: a top-level GET, which SameSite=Lax sends the cookie with.
  const [linkAnswer] = await Promise.all([
    page.waitForNavigation(),
    page.getByRole("link", { name: "Claim your prize" }).click(),
  ]);
  check(linkAnswer.status() === 403, `the link got ${linkAnswer.status()}`);
  const linkHeaders = await linkAnswer.request().allHeaders();
  check(linkHeaders["cookie"]?.includes("sessionid="), "the link carried the victim's cookie");
  check((await page.textContent("body")).includes("origin_not_allowed"), "the refusal is shown");
  await screenshot(page, "link-refused");

  const sent = readOutbox().map((m) => m.to);
  check(!sent.includes(PIXEL_PHONE) && !sent.includes(LINK_PHONE),
    `codes went to the attacker: ${sent.join(", ")}`);
  await page.goto(`${API}/v1/session`);
  const session = JSON.parse(await page.textContent("body"));
  check(session.verified_phone === VICTIM,
    `the victim's session now says ${session.verified_phone}`);
});
