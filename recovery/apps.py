from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class RecoveryConfig(AppConfig):
    name = "recovery"
    verbose_name = "Run recovery"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # No queries here: Django warns about database access during app initialisation.
        # The startup hook only decides whether this process is a server and, if so,
        # schedules the sweep on a background thread that waits until the apps are ready.
        from . import startup
        from .checks import check_recovery_settings

        checks.register(check_recovery_settings, checks.Tags.compatibility)
        startup.schedule_startup_recovery()
