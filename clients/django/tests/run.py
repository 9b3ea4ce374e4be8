"""Runs one part of the package's proof against a real verifyd on one store:

    python run.py suite sqlite|postgres BINARY DJANGO_TESTS_DIR
    python run.py e2e   sqlite|postgres BINARY

Each ends with unittest's summary line ("Ran N tests … OK") and exits non-zero on failure."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def suite(store, binary, django_tests_dir):
    from daemon import API_KEY, Daemon

    sys.path.insert(0, django_tests_dir)
    with Daemon(binary, store) as d:
        import django
        from django.conf import settings

        settings.configure(
            SECRET_KEY="django-suite-only",
            USE_TZ=True,
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django.contrib.sessions",
                "sessions_tests",
            ],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            SESSION_ENGINE="verifyd_django.session",
            VERIFYD_URL=d.url,
            VERIFYD_API_KEY=API_KEY,
            VERIFYD_TIMEOUT=(2.0, 10.0),
        )
        django.setup()
        from django.test.utils import get_runner

        runner = get_runner(settings)(verbosity=1, interactive=False)
        runner.setup_test_environment()
        old = runner.setup_databases()
        try:
            import suite as our_suite

            print(f"Django's sessions_tests on verifyd ({store}); excluded: {our_suite.EXCLUDED or 'none'}")
            result = unittest.TextTestRunner(verbosity=1).run(our_suite.load())
        finally:
            runner.teardown_databases(old)
            runner.teardown_test_environment()
    return result


def e2e(store, binary):
    from daemon import API_KEY, Daemon

    with Daemon(binary, store) as d:
        os.environ.update(
            VERIFYD_URL=d.url,
            VERIFYD_API_KEY=API_KEY,
            VERIFYD_OUTBOX=d.outbox,
            DJANGO_SETTINGS_MODULE="e2e_project.settings",
        )
        import django
        from django.test.utils import get_runner
        from django.conf import settings

        django.setup()
        runner = get_runner(settings)(verbosity=1, interactive=False)
        runner.setup_test_environment()
        try:
            import test_e2e

            print(f"end-to-end seed flow on verifyd ({store})")
            tests = unittest.TestLoader().loadTestsFromModule(test_e2e)
            result = unittest.TextTestRunner(verbosity=2).run(tests)
        finally:
            runner.teardown_test_environment()
    return result


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    mode, store, binary = sys.argv[1:4]
    if store not in ("sqlite", "postgres"):
        sys.exit(f"unknown store {store!r}")
    result = suite(store, binary, sys.argv[4]) if mode == "suite" else e2e(store, binary)
    if not result.wasSuccessful() or result.skipped or result.testsRun == 0:
        sys.exit(f"FAILED ({store}): {len(result.failures)} failures, {len(result.errors)} errors, "
                 f"{len(result.skipped)} skipped, {result.testsRun} run")
