"""Drop-in replacements for the seed's ``sms_send``/``sms_check`` views: same parameters and
answers, but verifyd makes, sends and checks the code; the session never holds it."""

from django.http import JsonResponse
from django.views.decorators.http import require_http_methods

from . import client
from .session import SessionStore


def _param(request, name):
    return (request.POST.get(name) or request.GET.get(name) or "").strip()


def _session_key(request):
    """The verifyd key of this request's session, creating (and saving) the session if needed.
    Unsaved changes are written first, so a key cycled by verifyd carries them."""
    session = request.session
    if session.session_key is None or session.modified:
        session.save()
    return session.session_key


@require_http_methods(["GET", "POST"])
def sms_send(request):
    """``/sms_send/?phone=…`` → ``{"Code": "OK", "Message": "OK"}``, or verifyd's error code
    and message with its HTTP status (e.g. 429 ``resend_too_soon``)."""
    body = {"phone": _param(request, "phone"), "session": _session_key(request)}
    locale = _param(request, "locale")
    if locale:
        body["locale"] = locale
    answer = client.call("POST", "/v1/verifications", body)
    if answer.status == 202:
        return JsonResponse({"Code": "OK", "Message": "OK"})
    response = JsonResponse(
        {"Code": answer.body.get("error", "error"), "Message": answer.body.get("message", "")},
        status=answer.status,
    )
    if "Retry-After" in answer.headers:
        response["Retry-After"] = answer.headers["Retry-After"]
    return response


@require_http_methods(["GET", "POST"])
def sms_check(request):
    """``/sms_check/?phone=…&code=…`` → ``{"result": "OK"}`` or ``{"result": "False"}``. A right
    code puts ``verified_phone``/``verified_at`` in the session and cycles its key (verifyd does
    both in one step); the new key reaches the browser through Django's session cookie."""
    body = {
        "phone": _param(request, "phone"),
        "code": _param(request, "code"),
        "session": _session_key(request),
    }
    answer = client.call("POST", "/v1/verifications/check", body)
    if answer.status == 200 and answer.body.get("status") == "approved":
        new_key = answer.body.get("session")
        if isinstance(request.session, SessionStore) and new_key:
            request.session.adopt(new_key)
        return JsonResponse({"result": "OK"})
    # Wrong, expired, unknown or malformed codes are all "False", as in the seed; throttling
    # keeps its status (and Retry-After) so clients can back off.
    status = answer.status if answer.status in (429,) else 200
    response = JsonResponse({"result": "False"}, status=status)
    if status == 429 and "Retry-After" in answer.headers:
        response["Retry-After"] = answer.headers["Retry-After"]
    return response
