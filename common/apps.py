from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class CommonConfig(AppConfig):
    """What both apps build on: personal API tokens, the JSON API's conventions, the sign-in
    and bearer throttle, and the readers of user input. Imports neither of them."""

    name = "common"
    verbose_name = "Common"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import check_common_settings

        checks.register(check_common_settings, checks.Tags.compatibility)
