"""The recovery API, mounted by the project under /api/qualify/."""

from . import api
from .jsonapi import api_path

app_name = "recovery"

urlpatterns = [
    *api_path("recovery", api.recovery, name="api"),
]
