from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.management import call_command
from django.db.models.signals import post_migrate


def create_cache_tables(*, using: str, verbosity: int = 1, **kwargs: Any) -> None:
    """`migrate` also creates the database cache's table (the default cache, which holds the
    authentication throttle's counts), so no deployment can forget `createcachetable`."""
    call_command("createcachetable", database=using, verbosity=max(0, verbosity - 1))


class QualifierConfig(AppConfig):
    name = "qualifier"
    verbose_name = "Qualification"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # No queries here: the checks only parse settings and import the scorer.
        from . import middleware  # noqa: F401  (connects the failed sign-in counter)
        from .checks import check_qualifier_settings, check_shared_cache

        checks.register(check_qualifier_settings, checks.Tags.compatibility)
        checks.register(check_shared_cache, checks.Tags.security, deploy=True)
        post_migrate.connect(create_cache_tables, sender=self, dispatch_uid="qualifier.cache")
