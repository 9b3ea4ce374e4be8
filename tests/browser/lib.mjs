// Shared by the browser scenarios: launching Debian's Chromium through playwright-core, reading
// codes from the mock provider's outbox, screenshots, and small waiting helpers. Each scenario
// is started by a Rust test (tests/browser.rs, tests/browser_cross_origin.rs), which runs the
// daemon and passes its address and outbox in the environment.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (these scripts are run by cargo test)`);
  return v;
}

// A scenario that hangs must still end: the Rust test waits for this process.
setTimeout(() => {
  console.error("scenario timed out after 120 s");
  process.exit(3);
}, 120_000).unref();

// Playwright passes --headless and a fresh temporary --user-data-dir itself. The other flags
// keep Chromium from calling home, which this machine's closed network refuses.
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

// A page that fails the scenario on any script error or Content-Security-Policy violation.
// `locale` is the browser's language (navigator.languages and Accept-Language).
export async function newPage(browser, viewport, locale = "en-US") {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, locale });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) {
      problems.push(`CSP: ${m.text()}`);
    }
  });
  return { context, page, problems };
}

let shot = 0;
export async function screenshot(page, name) {
  const dir = env("ARTIFACTS");
  mkdirSync(dir, { recursive: true });
  shot += 1;
  const path = join(dir, `${env("SCENARIO")}-${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot ${path}`);
}

// The newest code the mock provider sent to `phone` (it appends one JSON line per message).
export async function codeFor(phone, { after = 0 } = {}) {
  return (await smsFor(phone, { after })).code;
}

// The newest message (`{to, code, text}`) the mock provider sent to `phone`.
export async function smsFor(phone, { after = 0 } = {}) {
  for (let i = 0; i < 50; i++) {
    const sent = readOutbox().filter((m) => m.to === phone);
    if (sent.length > after) return sent[sent.length - 1];
    await sleep(100);
  }
  throw new Error(`no code for ${phone} in the outbox`);
}

export function readOutbox() {
  let text = "";
  try {
    text = readFileSync(env("OUTBOX"), "utf8");
  } catch {
    return [];
  }
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Waits until the status region shows text matching `pattern`.
export async function statusShows(page, pattern) {
  const status = page.getByRole("status");
  try {
    await status.filter({ hasText: pattern }).waitFor();
  } catch (e) {
    throw new Error(`status never matched ${pattern}; it says: ${await status.textContent()}`);
  }
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// Runs a scenario and turns any failure into a non-zero exit with the reason on stderr.
export async function run(scenario) {
  const browser = await launch();
  try {
    await scenario(browser);
    console.log("scenario passed");
  } catch (e) {
    console.error(e.stack || String(e));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
