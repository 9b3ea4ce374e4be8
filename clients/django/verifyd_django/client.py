"""The one HTTP client every part of the package shares: settings, a pooled connection to
verifyd, and the mapping of verifyd's answers to Python results and exceptions."""

import json
import threading

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULT_TIMEOUT = (2.0, 5.0)
DEFAULT_POOL_SIZE = 16


class VerifydError(Exception):
    """verifyd answered with an error this package does not turn into a session outcome."""

    def __init__(self, status, error, message):
        super().__init__(f"verifyd answered {status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message


class Answer:
    """Status, JSON body and headers of one verifyd answer."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers

    def error(self):
        return VerifydError(
            self.status, self.body.get("error", ""), self.body.get("message", "")
        )


_lock = threading.Lock()
_session = None
_session_config = None


def _config():
    url = getattr(settings, "VERIFYD_URL", None)
    key = getattr(settings, "VERIFYD_API_KEY", None)
    if not url:
        raise ImproperlyConfigured("settings.VERIFYD_URL is not set (e.g. http://127.0.0.1:8080)")
    if not key:
        raise ImproperlyConfigured("settings.VERIFYD_API_KEY is not set")
    timeout = getattr(settings, "VERIFYD_TIMEOUT", DEFAULT_TIMEOUT)
    pool = int(getattr(settings, "VERIFYD_POOL_SIZE", DEFAULT_POOL_SIZE))
    return url.rstrip("/"), key, timeout, pool


def _http():
    """The shared ``requests.Session`` (keep-alive connections, at most ``pool`` per process);
    rebuilt when the settings change, as they do under ``override_settings``."""
    global _session, _session_config
    config = _config()
    with _lock:
        if _session is None or _session_config != config:
            s = requests.Session()
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=1, pool_maxsize=config[3], max_retries=0
            )
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.headers["Authorization"] = f"Bearer {config[1]}"
            s.trust_env = False
            if _session is not None:
                _session.close()
            _session, _session_config = s, config
        return _session, config


def call(method, path, body=None, headers=None):
    """One request to verifyd. Raises ``requests.RequestException`` when verifyd cannot be
    reached and ``VerifydError`` for 5xx answers; 2xx and 4xx answers are returned."""
    s, (base, _key, timeout, _pool) = _http()
    data = None
    all_headers = dict(headers or {})
    if body is not None:
        # allow_nan=False: NaN and infinities are not JSON; refuse them here, clearly.
        data = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        data = data.encode("utf-8")
        all_headers["Content-Type"] = "application/json"
    resp = s.request(method, base + path, data=data, headers=all_headers, timeout=timeout)
    try:
        parsed = resp.json() if resp.content else {}
    except ValueError:
        parsed = {"error": "not_json", "message": resp.text[:200]}
    answer = Answer(resp.status_code, parsed, resp.headers)
    if resp.status_code >= 500:
        raise answer.error()
    return answer
