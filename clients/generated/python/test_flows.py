"""The README's browser flow (with its seed routes) and the backend session flow, through the
Python client that openapi-python-client generated from openapi.json a moment ago (package
``verifyd_client``).

run-tests.sh starts the daemon and passes VERIFYD_URL, VERIFYD_API_KEY and VERIFYD_OUTBOX (the
mock provider's outbox, one JSON line per message). Every step checks the status code, the
parsed model and the fields that matter; a response the generated code cannot parse fails too."""

import datetime
import json
import os
import sys
import unittest

from verifyd_client import AuthenticatedClient, Client
from verifyd_client.api.seed_compatibility import (
    seed_check_get_slash,
    seed_send_get_slash,
    seed_send_post,
)
from verifyd_client.api.sessions import (
    create_session,
    delete_value,
    get_session,
    get_value,
    set_expiry,
    set_value,
)
from verifyd_client.api.verifications import check_code, own_session, send_code
from verifyd_client.models import (
    Approved,
    CheckCode,
    CreateSession,
    Deleted,
    Error,
    Pending,
    SeedCheckResult,
    SeedError,
    SeedSendOk,
    SendAccepted,
    SendCode,
    Session,
    SetExpiry,
    SetValue,
    Value,
)

URL = os.environ["VERIFYD_URL"]
API_KEY = os.environ["VERIFYD_API_KEY"]
OUTBOX = os.environ["VERIFYD_OUTBOX"]
COOKIE = "sessionid"

# Numbers of their own (the TypeScript flows use others), so that no resend cooldown or
# per-number limit links the runs.
BROWSER_PHONE = "+8613800138001"
BACKEND_PHONE = "+8613800138002"
SEED_PHONE = "+8613800138005"


def last_code(phone):
    """The newest code the mock provider delivered to ``phone``."""
    with open(OUTBOX) as f:
        codes = [m["code"] for m in map(json.loads, filter(str.strip, f)) if m["to"] == phone]
    if not codes:
        raise AssertionError(f"the mock outbox holds no message to {phone}")
    return codes[-1]


def wrong(code):
    """A code of the same shape that is certainly not ``code``."""
    return "".join(str((int(c) + 1) % 10) for c in code)


def cookie_of(response):
    """The session key a response's ``Set-Cookie`` gives the browser, or None."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == COOKIE:
            return rest.split(";", 1)[0]
    return None


class Flows(unittest.TestCase):
    def expect(self, response, status, model=None):
        """The response has ``status`` and the generated code parsed it as ``model``: a class
        named after a schema in the document's components. Inline schemas get class names the
        generator makes up, so for those (``model`` None) any parsed answer but ``Error`` does."""
        self.assertEqual(
            response.status_code, status, f"{response.status_code}: {response.content!r}"
        )
        if model is None:
            self.assertIsNotNone(response.parsed, response.content)
            self.assertNotIsInstance(response.parsed, Error, response.content)
        else:
            self.assertIsInstance(response.parsed, model, response.content)
        return response.parsed

    def expect_error(self, response, status, code):
        error = self.expect(response, status, Error)
        self.assertEqual(error.error, code)
        self.assertTrue(error.message)

    def test_browser_flow(self):
        # A plain client (no Authorization): its httpx cookie jar plays the browser's.
        with Client(base_url=URL) as browser:
            r = send_code.sync_detailed(client=browser, body=SendCode(phone=BROWSER_PHONE))
            sent = self.expect(r, 202, SendAccepted)
            self.assertEqual(sent.status, "pending")
            self.assertGreater(sent.expires_in, 0)
            self.assertGreater(sent.resend_in, 0)
            first_key = cookie_of(r)
            self.assertIsNotNone(first_key, "the first send creates the session and its cookie")
            self.assertEqual(browser.get_httpx_client().cookies.get(COOKIE), first_key)

            code = last_code(BROWSER_PHONE)
            r = check_code.sync_detailed(
                client=browser, body=CheckCode(phone=BROWSER_PHONE, code=wrong(code))
            )
            self.assertEqual(self.expect(r, 200, Pending).attempts_left, 4)

            r = own_session.sync_detailed(client=browser)
            facts = self.expect(r, 200)
            self.assertIsNone(facts.verified_phone)
            self.assertIsNone(facts.verified_at)

            r = check_code.sync_detailed(
                client=browser, body=CheckCode(phone=BROWSER_PHONE, code=code)
            )
            approved = self.expect(r, 200, Approved)
            self.assertEqual(approved.verified_phone, BROWSER_PHONE)
            self.assertNotIn("session", approved.to_dict(), "a browser's new key is a cookie")
            new_key = cookie_of(r)
            self.assertIsNotNone(new_key, "approval cycles the key and re-sends the cookie")
            self.assertNotEqual(new_key, first_key)

            r = own_session.sync_detailed(client=browser)
            facts = self.expect(r, 200)
            self.assertEqual(facts.verified_phone, BROWSER_PHONE)
            verified_at = datetime.datetime.fromisoformat(facts.verified_at)
            age = datetime.datetime.now(datetime.UTC) - verified_at
            self.assertLess(abs(age.total_seconds()), 120, facts.verified_at)

        # The key planted before the approval is worthless now.
        with Client(base_url=URL, cookies={COOKIE: first_key}) as stale:
            self.expect_error(own_session.sync_detailed(client=stale), 404, "no_session")

    def test_seed_routes_flow(self):
        # The walkthrough's /sms_send/ and /sms_check/, with the seed's answer shapes.
        with Client(base_url=URL) as browser:
            r = seed_send_get_slash.sync_detailed(client=browser, phone="12")
            refused = self.expect(r, 422, SeedError)
            self.assertEqual((refused.code, bool(refused.message)), ("invalid_phone", True))

            r = seed_send_get_slash.sync_detailed(client=browser, phone=SEED_PHONE)
            ok = self.expect(r, 200, SeedSendOk)
            self.assertEqual((ok.code, ok.message), ("OK", "OK"))
            first_key = cookie_of(r)
            self.assertIsNotNone(first_key)

            r = seed_send_get_slash.sync_detailed(client=browser, phone=SEED_PHONE)
            self.assertEqual(self.expect(r, 429, SeedError).code, "resend_too_soon")
            self.assertGreater(int(r.headers["retry-after"]), 0)

            code = last_code(SEED_PHONE)
            r = seed_check_get_slash.sync_detailed(
                client=browser, phone=SEED_PHONE, code=wrong(code)
            )
            self.assertEqual(self.expect(r, 200, SeedCheckResult).result, "False")
            r = seed_check_get_slash.sync_detailed(client=browser, phone=SEED_PHONE, code=code)
            self.assertEqual(self.expect(r, 200, SeedCheckResult).result, "OK")
            self.assertEqual(r.content, b'{"result": "OK"}')
            self.assertNotIn(cookie_of(r), (None, first_key))

            facts = self.expect(own_session.sync_detailed(client=browser), 200)
            self.assertEqual(facts.verified_phone, SEED_PHONE)

        # A send another site's page makes is refused before the route runs: the usual shape.
        with Client(base_url=URL, headers={"Sec-Fetch-Site": "cross-site"}) as forged:
            r = seed_send_post.sync_detailed(client=forged, phone=SEED_PHONE)
            self.expect_error(r, 403, "origin_not_allowed")

    def test_backend_session_flow(self):
        with AuthenticatedClient(base_url=URL, token=API_KEY) as backend:
            r = create_session.sync_detailed(
                client=backend,
                body=CreateSession.from_dict({"data": {"cart": {"items": 1}}, "expiry": "default"}),
            )
            session = self.expect(r, 201, Session)
            key = session.key
            self.assertRegex(key, r"^[a-z0-9]{32}$")
            self.assertEqual(session.data.to_dict(), {"cart": {"items": 1}})
            self.assertEqual(session.expiry, "default")
            self.assertTrue(session.set_cookie.startswith(f"{COOKIE}={key};"))

            r = set_value.sync_detailed(
                key, "cart", client=backend, body=SetValue(value={"items": 3})
            )
            written = self.expect(r, 200, Value)
            self.assertEqual((written.name, written.value), ("cart", {"items": 3}))
            r = get_value.sync_detailed(key, "cart", client=backend)
            self.assertEqual(self.expect(r, 200, Value).value, {"items": 3})

            self.expect_error(
                get_value.sync_detailed(key, "coupon", client=backend), 404, "key_not_found"
            )
            r = get_value.sync_detailed(key, "coupon", client=backend, default="[]")
            self.assertEqual(self.expect(r, 200, Value).value, [])

            r = set_expiry.sync_detailed(key, client=backend, body=SetExpiry(expiry=300))
            session = self.expect(r, 200, Session)
            self.assertEqual(session.expiry, 300)
            self.assertEqual(session.max_age, 300)

            r = send_code.sync_detailed(
                client=backend, body=SendCode(phone=BACKEND_PHONE, session=key)
            )
            sent = self.expect(r, 202, SendAccepted)
            self.assertEqual(sent.status, "pending")
            self.assertRegex(sent.id, r"^dlv_[0-9a-f]{32}$")
            self.assertIsNone(cookie_of(r), "backends get no cookies")

            code = last_code(BACKEND_PHONE)
            r = check_code.sync_detailed(
                client=backend, body=CheckCode(phone=BACKEND_PHONE, code=code, session=key)
            )
            approved = self.expect(r, 200, Approved)
            self.assertEqual(approved.verified_phone, BACKEND_PHONE)
            new_key = approved.session
            self.assertRegex(new_key, r"^[a-z0-9]{32}$")
            self.assertNotEqual(new_key, key)
            self.assertIsNone(cookie_of(r), "backends get the new key in the body")

            self.expect_error(
                get_session.sync_detailed(key, client=backend), 404, "session_not_found"
            )
            r = get_session.sync_detailed(new_key, client=backend)
            session = self.expect(r, 200, Session)
            self.assertEqual(session.key, new_key)
            data = session.data.to_dict()
            self.assertEqual(data["cart"], {"items": 3})
            self.assertEqual(data["verified_phone"], BACKEND_PHONE)
            self.assertEqual(session.expiry, 300)

            r = set_value.sync_detailed(
                new_key, "cart", client=backend, body=SetValue(value={"items": 4})
            )
            self.expect(r, 200, Value)
            r = get_value.sync_detailed(new_key, "cart", client=backend)
            self.assertEqual(self.expect(r, 200, Value).value, {"items": 4})

            r = delete_value.sync_detailed(new_key, "cart", client=backend)
            deleted = self.expect(r, 200, Deleted)
            self.assertEqual((deleted.name, deleted.deleted), ("cart", True))
            self.expect_error(
                get_value.sync_detailed(new_key, "cart", client=backend), 404, "key_not_found"
            )
            self.expect_error(
                delete_value.sync_detailed(new_key, "cart", client=backend), 404, "key_not_found"
            )

        with AuthenticatedClient(base_url=URL, token="not-" + API_KEY) as impostor:
            self.expect_error(
                get_session.sync_detailed(new_key, client=impostor), 401, "unauthorized"
            )


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    if not result.wasSuccessful() or result.skipped or result.testsRun != 3:
        sys.exit(
            f"FAILED: {len(result.failures)} failures, {len(result.errors)} errors, "
            f"{len(result.skipped)} skipped, {result.testsRun} run"
        )
