"""The recovery API, mounted by the project under /api/qualify/."""

from django.urls import path

from . import api

app_name = "recovery"

urlpatterns = [
    path("recovery", api.recovery, name="api"),
]
