"""`manage.py create_api_token <username> --name NAME`: issue a personal API token, print it once."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from common.models import ApiToken, TokenRefused
from common.tokens import issue_token


class Command(BaseCommand):
    help = (
        "Create a personal API token for a user and print it once on standard output (only its "
        "hash is stored). Scripts send it as 'Authorization: Bearer <token>'; it acts as that "
        "user. Revoke it on the user's API tokens page or in the admin."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username", help="The user the token acts as.")
        parser.add_argument(
            "--name",
            required=True,
            help="What the token is for, unique among the user's tokens (at most 100 characters).",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Revoke the user's active token of that name first, so that a script can run "
            "again (default: refuse a name in use).",
        )

    def handle(
        self, *, username: str, name: str, replace: bool, verbosity: int, **options: Any
    ) -> None:
        users = get_user_model()
        try:
            user = users._default_manager.get_by_natural_key(username)
        except users.DoesNotExist:
            raise CommandError(f"There is no user named {username!r}.") from None
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive: a token of theirs would not work.")
        try:
            with transaction.atomic():
                replaced = ApiToken.objects.filter(user=user, name=name).revoke() if replace else 0
                token, plaintext = issue_token(user, name)
        except TokenRefused as exc:
            raise CommandError(str(exc)) from None
        # The token alone on stdout, so that `TOKEN=$(manage.py create_api_token ...)` works;
        # the notice goes to stderr.
        self.stdout.write(plaintext)
        if verbosity >= 1:
            if replaced:
                self.stderr.write(f"Revoked the earlier API token {name!r} of {username}.")
            self.stderr.write(
                f"Created API token {token.name!r} ({token.prefix}…) for {username}. "
                "It is shown only this once: store it now.",
                style_func=self.style.SUCCESS,
            )
