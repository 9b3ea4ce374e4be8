from django.urls import path

from . import views

urlpatterns = [
    path("sms_send/", views.sms_send),
    path("sms_check/", views.sms_check),
]
