"""Settings of the end-to-end project; ``VERIFYD_URL``/``VERIFYD_API_KEY`` come from the
environment the runner sets (a real daemon started for the test)."""

import os

SECRET_KEY = "e2e-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "e2e_project.urls"
INSTALLED_APPS = ["django.contrib.sessions"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
DATABASES = {}

SESSION_ENGINE = "verifyd_django.session"
VERIFYD_URL = os.environ["VERIFYD_URL"]
VERIFYD_API_KEY = os.environ["VERIFYD_API_KEY"]
VERIFYD_TIMEOUT = (2.0, 10.0)
