/**
 * The README's browser flow (with its seed routes) and the backend session flow, through
 * openapi-fetch typed by the `paths` that openapi-typescript generated from openapi.json a moment
 * ago (build/schema.d.ts). tsc --strict checks every call against the document before node runs
 * them.
 *
 * run-tests.sh starts the daemon and passes VERIFYD_URL, VERIFYD_API_KEY and VERIFYD_OUTBOX (the
 * mock provider's outbox, one JSON line per message).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import createClient, { type Client } from "openapi-fetch";
import type { paths } from "../build/schema.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run clients/generated/run-tests.sh)`);
  return value;
}

const baseUrl = env("VERIFYD_URL");
const apiKey = env("VERIFYD_API_KEY");
const outbox = env("VERIFYD_OUTBOX");
const COOKIE = "sessionid";

// Numbers of their own (the Python flows use others), so that no resend cooldown or
// per-number limit links the runs.
const BROWSER_PHONE = "+8613800138003";
const BACKEND_PHONE = "+8613800138004";
const SEED_PHONE = "+8613800138006";

/** The newest code the mock provider delivered to `phone`. */
function lastCode(phone: string): string {
  const codes = readFileSync(outbox, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as { to: string; code: string })
    .filter((m) => m.to === phone)
    .map((m) => m.code);
  const code = codes.at(-1);
  assert.ok(code, `the mock outbox holds no message to ${phone}`);
  return code;
}

/** A code of the same shape that is certainly not `code`. */
function wrong(code: string): string {
  return [...code].map((c) => String((Number(c) + 1) % 10)).join("");
}

/** The session key a response's `Set-Cookie` gives the browser, if any. */
function cookieOf(response: Response): string | undefined {
  for (const header of response.headers.getSetCookie()) {
    const [pair = ""] = header.split(";");
    const eq = pair.indexOf("=");
    if (pair.slice(0, eq) === COOKIE) return pair.slice(eq + 1);
  }
  return undefined;
}

/** A client that keeps the session cookie the way a browser does (fetch in node keeps none). */
function browser(key?: string): { client: Client<paths>; jar: { key: string | undefined } } {
  const jar = { key };
  const client = createClient<paths>({ baseUrl });
  client.use({
    onRequest({ request }) {
      if (jar.key) request.headers.set("cookie", `${COOKIE}=${jar.key}`);
      return request;
    },
    onResponse({ response }) {
      const set = cookieOf(response);
      if (set !== undefined) jar.key = set === "" ? undefined : set;
      return response;
    },
  });
  return { client, jar };
}

function backend(key = apiKey): Client<paths> {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });
}

/**
 * An error answer: its status and stable code, with a message. `code` must be one of the codes
 * the document gives this operation, or tsc refuses the call.
 */
function assertError<E extends { error: string; message: string }>(
  got: { error?: E; response: Response },
  status: number,
  code: E["error"],
): void {
  assert.equal(got.response.status, status);
  assert.ok(got.error, `no error body with ${got.response.status}`);
  assert.equal(got.error.error, code);
  assert.ok(got.error.message);
}

test("browser flow: send, wrong code, right code, own session", async () => {
  const { client, jar } = browser();
  const sent = await client.POST("/v1/verifications", { body: { phone: BROWSER_PHONE } });
  assert.equal(sent.response.status, 202);
  assert.ok(sent.data);
  assert.equal(sent.data.status, "pending");
  assert.ok(sent.data.expires_in > 0 && sent.data.resend_in > 0);
  const firstKey = jar.key;
  assert.ok(firstKey, "the first send creates the session and its cookie");

  const code = lastCode(BROWSER_PHONE);
  const miss = await client.POST("/v1/verifications/check", {
    body: { phone: BROWSER_PHONE, code: wrong(code) },
  });
  assert.equal(miss.response.status, 200);
  assert.ok(miss.data?.status === "pending", JSON.stringify(miss.data));
  assert.equal(miss.data.attempts_left, 4);

  const before = await client.GET("/v1/session");
  assert.equal(before.response.status, 200);
  assert.deepEqual(before.data, { verified_phone: null, verified_at: null });

  const hit = await client.POST("/v1/verifications/check", {
    body: { phone: BROWSER_PHONE, code },
  });
  assert.equal(hit.response.status, 200);
  assert.ok(hit.data?.status === "approved", JSON.stringify(hit.data));
  assert.equal(hit.data.verified_phone, BROWSER_PHONE);
  assert.equal(hit.data.session, undefined, "a browser's new key is a cookie");
  assert.ok(jar.key, "approval cycles the key and re-sends the cookie");
  assert.notEqual(jar.key, firstKey);

  const after = await client.GET("/v1/session");
  assert.equal(after.response.status, 200);
  assert.ok(after.data);
  assert.equal(after.data.verified_phone, BROWSER_PHONE);
  assert.ok(after.data.verified_at);
  const age = Date.now() - Date.parse(after.data.verified_at);
  assert.ok(Math.abs(age) < 120_000, after.data.verified_at);

  // The key planted before the approval is worthless now.
  assertError(await browser(firstKey).client.GET("/v1/session"), 404, "no_session");
});

test("seed routes flow: the walkthrough's /sms_send/ and /sms_check/", async () => {
  const { client, jar } = browser();
  const send = () => client.GET("/sms_send/", { params: { query: { phone: SEED_PHONE } } });

  const refused = await client.GET("/sms_send/", { params: { query: { phone: "12" } } });
  assert.equal(refused.response.status, 422);
  assert.ok(refused.error && "Code" in refused.error, JSON.stringify(refused.error));
  assert.equal(refused.error.Code, "invalid_phone");
  assert.ok(refused.error.Message);
  assert.equal(jar.key, undefined, "a refused send makes no session");

  const sent = await send();
  assert.equal(sent.response.status, 200);
  assert.deepEqual(sent.data, { Code: "OK", Message: "OK" });
  const firstKey = jar.key;
  assert.ok(firstKey);

  const again = await send();
  assert.equal(again.response.status, 429);
  assert.ok(again.error && "Code" in again.error, JSON.stringify(again.error));
  assert.equal(again.error.Code, "resend_too_soon");
  assert.ok(Number(again.response.headers.get("retry-after")) > 0);

  const code = lastCode(SEED_PHONE);
  const check = (c: string) =>
    client.GET("/sms_check/", { params: { query: { phone: SEED_PHONE, code: c } } });
  const miss = await check(wrong(code));
  assert.equal(miss.response.status, 200);
  assert.deepEqual(miss.data, { result: "False" });
  const hit = await check(code);
  assert.equal(hit.response.status, 200);
  assert.deepEqual(hit.data, { result: "OK" });
  assert.ok(jar.key && jar.key !== firstKey, "approval cycles the key and re-sends the cookie");

  const facts = await client.GET("/v1/session");
  assert.equal(facts.data?.verified_phone, SEED_PHONE);

  // A send another site's page makes is refused before the route runs: the usual shape.
  const forged = await client.POST("/sms_send", {
    params: { query: { phone: SEED_PHONE } },
    headers: { "Sec-Fetch-Site": "cross-site" },
  });
  assert.equal(forged.response.status, 403);
  assert.ok(forged.error && "error" in forged.error, JSON.stringify(forged.error));
  assert.equal(forged.error.error, "origin_not_allowed");
  assert.ok(forged.error.message);
});

test("backend session flow: session API, send and check naming the session", async () => {
  const api = backend();
  const created = await api.POST("/v1/sessions", {
    body: { data: { cart: { items: 1 } }, expiry: "default" },
  });
  assert.equal(created.response.status, 201);
  assert.ok(created.data);
  const key = created.data.key;
  assert.match(key, /^[a-z0-9]{32}$/);
  assert.deepEqual(created.data.data, { cart: { items: 1 } });
  assert.equal(created.data.expiry, "default");
  assert.ok(created.data.set_cookie.startsWith(`${COOKIE}=${key};`));

  const value = (k: string, name: string) => ({ params: { path: { key: k, name } } });

  const written = await api.PUT("/v1/sessions/{key}/data/{name}", {
    ...value(key, "cart"),
    body: { value: { items: 3 } },
  });
  assert.equal(written.response.status, 200);
  assert.deepEqual(written.data, { name: "cart", value: { items: 3 } });
  const read = await api.GET("/v1/sessions/{key}/data/{name}", value(key, "cart"));
  assert.equal(read.response.status, 200);
  assert.deepEqual(read.data?.value, { items: 3 });

  assertError(
    await api.GET("/v1/sessions/{key}/data/{name}", value(key, "coupon")),
    404,
    "key_not_found",
  );
  const fallback = await api.GET("/v1/sessions/{key}/data/{name}", {
    params: { path: { key, name: "coupon" }, query: { default: "[]" } },
  });
  assert.equal(fallback.response.status, 200);
  assert.deepEqual(fallback.data, { name: "coupon", value: [] });

  const expiry = await api.PUT("/v1/sessions/{key}/expiry", {
    params: { path: { key } },
    body: { expiry: 300 },
  });
  assert.equal(expiry.response.status, 200);
  assert.equal(expiry.data?.expiry, 300);
  assert.equal(expiry.data?.max_age, 300);

  const sent = await api.POST("/v1/verifications", {
    body: { phone: BACKEND_PHONE, session: key },
  });
  assert.equal(sent.response.status, 202);
  assert.equal(sent.data?.status, "pending");
  assert.match(sent.data?.id ?? "", /^dlv_[0-9a-f]{32}$/);
  assert.equal(cookieOf(sent.response), undefined, "backends get no cookies");

  const checked = await api.POST("/v1/verifications/check", {
    body: { phone: BACKEND_PHONE, code: lastCode(BACKEND_PHONE), session: key },
  });
  assert.equal(checked.response.status, 200);
  assert.ok(checked.data?.status === "approved", JSON.stringify(checked.data));
  assert.equal(checked.data.verified_phone, BACKEND_PHONE);
  const newKey = checked.data.session;
  assert.ok(newKey, "backends get the new key in the body");
  assert.match(newKey, /^[a-z0-9]{32}$/);
  assert.notEqual(newKey, key);
  assert.equal(cookieOf(checked.response), undefined);

  const session = (k: string) => ({ params: { path: { key: k } } });
  assertError(await api.GET("/v1/sessions/{key}", session(key)), 404, "session_not_found");
  const followed = await api.GET("/v1/sessions/{key}", session(newKey));
  assert.equal(followed.response.status, 200);
  assert.ok(followed.data);
  assert.equal(followed.data.key, newKey);
  assert.deepEqual(followed.data.data["cart"], { items: 3 });
  assert.equal(followed.data.data["verified_phone"], BACKEND_PHONE);
  assert.equal(followed.data.expiry, 300);

  const rewritten = await api.PUT("/v1/sessions/{key}/data/{name}", {
    ...value(newKey, "cart"),
    body: { value: { items: 4 } },
  });
  assert.equal(rewritten.response.status, 200);
  const reread = await api.GET("/v1/sessions/{key}/data/{name}", value(newKey, "cart"));
  assert.deepEqual(reread.data, { name: "cart", value: { items: 4 } });

  const deleted = await api.DELETE("/v1/sessions/{key}/data/{name}", value(newKey, "cart"));
  assert.equal(deleted.response.status, 200);
  assert.deepEqual(deleted.data, { name: "cart", deleted: true });
  assertError(
    await api.GET("/v1/sessions/{key}/data/{name}", value(newKey, "cart")),
    404,
    "key_not_found",
  );
  assertError(
    await api.DELETE("/v1/sessions/{key}/data/{name}", value(newKey, "cart")),
    404,
    "key_not_found",
  );

  assertError(
    await backend(`not-${apiKey}`).GET("/v1/sessions/{key}", session(newKey)),
    401,
    "unauthorized",
  );
});
