"""The seed's design as a benchmark peer: Django with database-backed sessions on PostgreSQL.
Only what the two views need is installed. Not part of verifyd."""
import os

SECRET_KEY = "bench-peer-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.sessions"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = "peer.urls"
WSGI_APPLICATION = "peer.wsgi.application"
SESSION_ENGINE = "django.contrib.sessions.backends.db"
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PEER_DB", "verifyd_peer"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        # Persistent connections: kinder to the peer than Django's default of one per request.
        "CONN_MAX_AGE": 600,
    }
}
LOGGING_CONFIG = None
