"""The seed application's two views, as it wrote them: the code lives in the session, the
session is cut to five minutes, and the SMS gateway is a no-op (the mock)."""
import random

from django.http import JsonResponse


def mock_send(phone, code):
    return {"Code": "OK", "Message": "OK"}


def sms_send(request):
    phone = request.GET.get("phone") or request.POST.get("phone")
    code = "%06d" % random.randint(0, 999999)
    request.session["phone"] = phone
    request.session["code"] = code
    request.session.set_expiry(300)
    return JsonResponse(mock_send(phone, code))


def sms_check(request):
    phone = request.GET.get("phone") or request.POST.get("phone")
    code = request.GET.get("code") or request.POST.get("code")
    ok = request.session.get("phone") == phone and request.session.get("code") == code
    return JsonResponse({"result": "OK" if ok else "False"})
