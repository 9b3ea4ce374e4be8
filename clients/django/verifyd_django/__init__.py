"""Django on verifyd: a session engine whose sessions live in verifyd, and SMS verification
helpers (drop-in ``sms_send``/``sms_check`` views, a verified-phone decorator and mixin)."""

__version__ = "0.1.0"
