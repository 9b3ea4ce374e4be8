"""``SESSION_ENGINE = "verifyd_django.session"``: Django's session contract over verifyd's
session API. Every method is one or two HTTP calls and nothing is cached between requests, so
every Django process (and verifyd's own browser routes) sees the same session."""

from datetime import datetime, timedelta
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.utils import timezone

from . import client

# Where ``load`` remembers verifyd's expiry, so a save that Django did not ask to change it
# keeps a never-expiring (``null``) session never-expiring.
_NEVER = object()


def _path(session_key):
    return "/v1/sessions/" + quote(session_key, safe="")


def verifyd_expiry(session_expiry, loaded=None):
    """verifyd's ``expiry`` for Django's ``_session_expiry`` value.

    * missing (``set_expiry(None)``) → ``"default"``, unless the session was loaded with
      verifyd's never-expiring ``null`` and Django did not set an expiry: it stays ``null``;
    * ``0`` → ``0`` (a browser-session cookie);
    * ``N > 0`` → ``N`` seconds of inactivity, sliding;
    * ``N < 0`` → ``{"at": now + N}``: already over, the session is dead at once;
    * a datetime (Django stores it as ISO text; ``timedelta`` becomes one) → ``{"at": …}``;
      a naive datetime is read in Django's current time zone, as Django itself reads it.
    """
    if session_expiry is None:
        return None if loaded is _NEVER else "default"
    if isinstance(session_expiry, bool):
        raise TypeError("_session_expiry must be an int, a datetime or None")
    if isinstance(session_expiry, int):
        if session_expiry >= 0:
            return session_expiry
        return {"at": _rfc3339(timezone.now() + timedelta(seconds=session_expiry))}
    if isinstance(session_expiry, str):
        session_expiry = datetime.fromisoformat(session_expiry)
    if isinstance(session_expiry, datetime):
        return {"at": _rfc3339(session_expiry)}
    raise TypeError(f"unsupported _session_expiry {session_expiry!r}")


def _rfc3339(moment):
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_current_timezone())
    return moment.isoformat(timespec="milliseconds")


class SessionStore(SessionBase):
    """A Django session whose data and expiry live in verifyd (see the package README)."""

    def __init__(self, session_key=None):
        super().__init__(session_key)
        self._verifyd_expiry = None

    # -- reading -------------------------------------------------------------------------------

    def load(self):
        """``GET /v1/sessions/{key}``. An unknown, expired or malformed key loads as an empty
        session with no key, and nothing is created (Django's rule against DoS by load)."""
        if self.session_key is not None:
            answer = client.call("GET", _path(self.session_key))
            if answer.status == 200:
                self._remember(answer.body)
                return dict(answer.body["data"])
            if answer.status != 404:
                raise answer.error()
        self._session_key = None
        return {}

    def exists(self, session_key):
        """``GET /v1/sessions/{key}``: 200 means it exists (the read also slides its expiry)."""
        if not session_key:
            return False
        answer = client.call("GET", _path(session_key))
        if answer.status in (200, 404):
            return answer.status == 200
        raise answer.error()

    # -- writing -------------------------------------------------------------------------------

    def create(self):
        """``POST /v1/sessions`` with the current data: verifyd picks the key (it never accepts
        one from a client), so a collision and ``CreateError`` cannot happen."""
        data = self._get_session(no_load=True)
        answer = client.call(
            "POST",
            "/v1/sessions",
            {"data": data, "expiry": verifyd_expiry(data.get("_session_expiry"))},
        )
        if answer.status != 201:
            raise answer.error()
        self._session_key = answer.body["key"]
        self._remember(answer.body)
        self.modified = True

    def save(self, must_create=False):
        """``must_create`` (or no key yet): ``create()``. Otherwise ``PUT /v1/sessions/{key}``
        replaces data and expiry in one step; a session that is gone raises ``UpdateError``."""
        if self.session_key is None or must_create:
            if must_create and self.session_key is not None and self.exists(self.session_key):
                raise CreateError
            return self.create()
        data = self._get_session(no_load=False)
        expiry = verifyd_expiry(data.get("_session_expiry"), self._verifyd_expiry)
        answer = client.call("PUT", _path(self.session_key), {"data": data, "expiry": expiry})
        if answer.status == 404:
            raise UpdateError
        if answer.status != 200:
            raise answer.error()
        self._remember(answer.body)

    def delete(self, session_key=None):
        """``POST /v1/sessions/{key}/flush``; a session already gone is not an error."""
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        answer = client.call("POST", _path(session_key) + "/flush")
        if answer.status not in (200, 404):
            raise answer.error()

    def cycle_key(self):
        """``POST /v1/sessions/{key}/cycle``: verifyd moves the stored session to a new key in
        one step (pending verifications stay with it); the data in hand is saved by the next
        ``save()``. Without a stored session this is Django's ``create()``."""
        data = self._session
        key = self.session_key
        if key is not None:
            answer = client.call("POST", _path(key) + "/cycle")
            if answer.status == 200:
                self._session_key = answer.body["key"]
                self._remember(answer.body)
                self._session_cache = data
                self.modified = True
                return
            if answer.status != 404:
                raise answer.error()
        self.create()
        self._session_cache = data

    def adopt(self, session_key):
        """Follow verifyd to a key it gave this session (a right code cycles the key): the data
        is read again from verifyd and the cookie is re-sent with the new key."""
        self._session_key = session_key
        self.__dict__.pop("_session_cache", None)
        self.modified = True

    @classmethod
    def clear_expired(cls):
        """Does nothing: verifyd's sweeper deletes expired sessions (``sweeper.*``), and an
        expired session is never served before that. ``manage.py clearsessions`` is harmless."""

    # -- async twins: the same HTTP calls in a worker thread ------------------------------------

    async def aload(self):
        return await sync_to_async(self.load)()

    async def aexists(self, session_key):
        return await sync_to_async(self.exists)(session_key)

    async def acreate(self):
        return await sync_to_async(self.create)()

    async def asave(self, must_create=False):
        return await sync_to_async(self.save)(must_create)

    async def adelete(self, session_key=None):
        return await sync_to_async(self.delete)(session_key)

    async def acycle_key(self):
        await self._aget_session()
        return await sync_to_async(self.cycle_key)()

    @classmethod
    async def aclear_expired(cls):
        cls.clear_expired()

    # -- helpers -------------------------------------------------------------------------------

    def _remember(self, body):
        self._verifyd_expiry = _NEVER if body.get("expiry", "default") is None else None
