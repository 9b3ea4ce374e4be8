"""Guards for views that need a phone number verified in this session: a decorator for
functions and a mixin for class-based views. Both read ``verified_phone``, which only verifyd
writes (on a right code), so a Django view cannot be tricked into it by request data."""

from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import redirect


def verified_phone(request):
    """The E.164 number verified in this request's session, or ``None``."""
    value = request.session.get("verified_phone")
    return value if isinstance(value, str) and value.startswith("+") else None


def _refuse(request):
    url = getattr(settings, "VERIFYD_VERIFY_URL", None)
    if url:
        return redirect(f"{url}?next={request.get_full_path()}")
    return JsonResponse(
        {"error": "phone_not_verified", "message": "verify a phone number first"}, status=403
    )


def verified_phone_required(view):
    """Calls ``view`` only when the session holds a verified phone; otherwise redirects to
    ``settings.VERIFYD_VERIFY_URL`` (with ``?next=``) or answers 403 JSON."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if verified_phone(request) is None:
            return _refuse(request)
        return view(request, *args, **kwargs)

    return wrapper


class VerifiedPhoneRequiredMixin:
    """Class-based views: put before ``View`` in the bases."""

    def dispatch(self, request, *args, **kwargs):
        if verified_phone(request) is None:
            return _refuse(request)
        return super().dispatch(request, *args, **kwargs)
