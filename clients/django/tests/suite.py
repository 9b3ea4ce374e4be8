"""Django 5.2's own ``tests/sessions_tests`` against verifyd: every ``SessionTestsMixin`` test
and every ``SessionMiddlewareTests`` test, with ``verifyd_django.session`` as the engine.

The middleware tests name Django's database backend in two places; they are pointed at this
engine instead (``DatabaseSession`` → our ``SessionStore``, ``Session.objects.get`` → a read
from verifyd), so they test the same behaviour on verifyd. Nothing is skipped; the exclusions
(none at present) would be listed in ``EXCLUDED`` with their reasons and in the README."""

import unittest
from unittest import mock

from django.test import SimpleTestCase

# Imported after settings are configured (see run.py).
import sessions_tests.tests as django_tests
from verifyd_django.session import SessionStore

# test id → reason. Kept in step with the README's table.
EXCLUDED = {}


class VerifydSessionTests(django_tests.SessionTestsMixin, SimpleTestCase):
    backend = SessionStore


class _StoredSession:
    """What ``Session.objects.get(session_key=…)`` answers in the middleware tests, read from
    verifyd: ``get_decoded()`` is the stored data."""

    class DoesNotExist(Exception):
        pass

    class objects:  # noqa: N801 - mirrors the model manager's name
        @staticmethod
        def get(session_key):
            store = SessionStore(session_key)
            data = store.load()
            if store.session_key is None:
                raise _StoredSession.DoesNotExist(session_key)
            found = _StoredSession()
            found.get_decoded = lambda: data
            return found


@mock.patch.object(django_tests, "DatabaseSession", SessionStore)
@mock.patch.object(django_tests, "Session", _StoredSession)
class VerifydSessionMiddlewareTests(django_tests.SessionMiddlewareTests):
    pass


def load():
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for case in (VerifydSessionTests, VerifydSessionMiddlewareTests):
        for test in loader.loadTestsFromTestCase(case):
            if test.id().rsplit(".", 1)[-1] not in EXCLUDED:
                suite.addTest(test)
    return suite
