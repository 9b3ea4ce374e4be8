"""A small Django project that moved off the seed's code-in-session views: settings name the
verifyd engine, urls map the seed's paths to verifyd_django's views."""
