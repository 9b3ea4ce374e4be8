// A daemon that asks every browser send for a challenge (challenge.mode = "always"): the demo
// page gets 428 challenge_required, fetches an ALTCHA challenge from verifyd, solves it with
// WebCrypto in the page, sends again with the solution and the code goes out; the person then
// verifies the number as usual. Every request the page makes stays on verifyd's origin.
import { check, codeFor, env, newPage, run, screenshot, statusShows } from "./lib.mjs";

const BASE = env("VERIFYD_URL");
const PHONE = env("PHONE");

await run(async (browser) => {
  const { page, problems } = await newPage(browser, { width: 390, height: 760 });
  const requests = [];
  const sends = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("response", (r) => {
    if (r.url().endsWith("/v1/verifications")) sends.push(r.status());
  });
  await page.goto(`${BASE}/`);
  await page.getByRole("heading", { name: "Verify your phone number" }).waitFor();

  await page.getByLabel("Phone number").fill(PHONE);
  await page.getByRole("button", { name: "Send code" }).click();
  await statusShows(page, new RegExp(`Code sent to \\${PHONE}\\.`));
  await screenshot(page, "code-sent-after-challenge");
  check(JSON.stringify(sends) === "[428,202]", `sends answered ${JSON.stringify(sends)}`);
  const challenges = requests.filter((u) => u.endsWith("/v1/challenge"));
  check(challenges.length === 1, `challenge fetched ${challenges.length} times`);
  const elsewhere = requests.filter((u) => !u.startsWith(`${BASE}/`));
  check(elsewhere.length === 0, `requests to other origins: ${elsewhere.join(", ")}`);

  const code = await codeFor(PHONE);
  await page.getByLabel("Code from the SMS").fill(code);
  await page.getByRole("button", { name: "Verify" }).click();
  await statusShows(page, new RegExp(`Verified: \\${PHONE}\\.`));
  await screenshot(page, "verified");
  check(problems.length === 0, problems.join("; "));
});
