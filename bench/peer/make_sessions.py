"""Creates N peer sessions holding a pending code for +15550001000 and prints their keys
(run with `manage.py shell -c`, N from PEER_SESSIONS)."""
import os

from django.contrib.sessions.backends.db import SessionStore

for _ in range(int(os.environ.get("PEER_SESSIONS", "1000"))):
    s = SessionStore()
    s["phone"] = "+15550001000"
    s["code"] = "123456"
    s.set_expiry(86400)
    s.create()
    print(s.session_key)
