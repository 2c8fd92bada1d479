from django.apps import AppConfig
from django.core import checks


class QualifierConfig(AppConfig):
    name = "qualifier"
    verbose_name = "Qualification"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # No queries here: the checks only parse settings and import the scorer.
        from . import middleware  # noqa: F401  (connects the failed sign-in counter)
        from .checks import check_qualifier_settings

        checks.register(check_qualifier_settings, checks.Tags.compatibility)
