"""The seed's flow through Django's test client, against a real verifyd with the mock SMS
provider: send, a wrong code, the right code, and ``request.session`` showing the number."""

import os
import unittest

from django.test import SimpleTestCase

PHONE = "+8613800138000"


class SeedFlowTests(SimpleTestCase):
    def codes(self):
        import json

        with open(os.environ["VERIFYD_OUTBOX"]) as f:
            return [json.loads(l)["code"] for l in f if l.strip() and json.loads(l)["to"] == PHONE]

    def test_send_wrong_right_and_the_session_shows_the_number(self):
        c = self.client
        self.assertEqual(c.get("/me/").status_code, 403, "nothing verified yet")
        # Something the application put in the session before verifying must survive.
        r = c.get("/sms_send/", {"phone": PHONE})
        self.assertEqual(r.status_code, 200, r.content)
        self.assertEqual(r.json(), {"Code": "OK", "Message": "OK"})
        first_key = c.cookies["sessionid"].value
        self.assertEqual(len(first_key), 32)
        [code] = self.codes()

        wrong = "000000" if code != "000000" else "111111"
        r = c.get("/sms_check/", {"phone": PHONE, "code": wrong})
        self.assertEqual(r.json(), {"result": "False"})
        self.assertEqual(c.get("/me/").status_code, 403, "a wrong code verifies nothing")

        r = c.post("/sms_check/", {"phone": PHONE, "code": code})
        self.assertEqual(r.json(), {"result": "OK"})
        new_key = c.cookies["sessionid"].value
        self.assertNotEqual(new_key, first_key, "a right code cycles the session key")
        r = c.get("/me/")
        self.assertEqual(r.status_code, 200, r.content)
        self.assertEqual(r.json()["verified_phone"], PHONE)
        self.assertEqual(c.session["verified_phone"], PHONE)

        # The old key is dead: a browser that kept it is not verified.
        c.cookies["sessionid"] = first_key
        self.assertEqual(c.get("/me/").status_code, 403)

        # The code approved once; replaying it on a fresh session does nothing.
        c.cookies.clear()
        c.get("/sms_send/", {"phone": "+12015550123"})
        r = c.get("/sms_check/", {"phone": PHONE, "code": code})
        self.assertEqual(r.json(), {"result": "False"})
        self.assertEqual(c.get("/me/").status_code, 403)

    def test_resend_too_soon_keeps_verifyd_status(self):
        c = self.client
        self.assertEqual(c.get("/sms_send/", {"phone": "+12015550124"}).status_code, 200)
        r = c.get("/sms_send/", {"phone": "+12015550124"})
        self.assertEqual(r.status_code, 429)
        self.assertEqual(r.json()["Code"], "resend_too_soon")
        self.assertIn("Retry-After", r.headers)


if __name__ == "__main__":
    unittest.main()
