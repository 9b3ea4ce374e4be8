"""The seed's two routes, now verifyd_django's views, and one page that needs a verified phone."""

from django.http import JsonResponse
from django.urls import path

from verifyd_django import views
from verifyd_django.decorators import verified_phone_required


@verified_phone_required
def me(request):
    return JsonResponse(
        {"verified_phone": request.session["verified_phone"], "cart": request.session.get("cart")}
    )


urlpatterns = [
    path("sms_send/", views.sms_send),
    path("sms_check/", views.sms_check),
    path("me/", me),
]
