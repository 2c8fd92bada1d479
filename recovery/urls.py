"""The recovery API, mounted by the project under /api/qualify/."""

from common.jsonapi import api_path

from . import api

app_name = "recovery"

urlpatterns = [
    *api_path("recovery", api.recovery, name="api"),
]
