"""Personal API tokens: `Authorization: Bearer <token>` acts as the token's user, in both APIs."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .inputs import unstorable

#: Personal tokens start with this, so they are told apart from other secrets at a glance
#: (and by secret scanners); the rest is TOKEN_SECRET_BYTES random bytes in URL-safe base64.
TOKEN_PREFIX = "qlf_"  # noqa: S105 (a label, not a secret)
TOKEN_SECRET_BYTES = 32
_TOKEN_FORMAT = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")
#: How much of a token lists show: the prefix and 8 random characters, useless without the rest.
TOKEN_DISPLAY_LENGTH = len(TOKEN_PREFIX) + 8


def token_digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


class TokenRefused(ValueError):
    """A token that cannot be issued, with the form field it concerns (None: the whole form)."""

    def __init__(self, message: str, field: str | None = "name") -> None:
        super().__init__(message)
        self.field = field


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)

    def revoke(self) -> int:
        """Revokes the active tokens among these; how many were revoked."""
        return self.active().update(revoked_at=timezone.now())

    def issue(self, user: Any, name: Any) -> tuple[ApiToken, str]:
        """A new token for `user`, and its plaintext, which is never stored or shown again.

        Raises `TokenRefused` for a blank, too long or duplicate name, or when the user has
        API_TOKENS_PER_USER active tokens already.
        """
        name = _token_name(name)
        duplicate = TokenRefused(f"You already have a token named {name!r}: choose another name.")
        try:
            with transaction.atomic():
                # Lock the owner so that two concurrent issues cannot both pass the limit
                # (PostgreSQL; SQLite runs one writer at a time anyway).
                user._meta.model._default_manager.select_for_update().values_list("pk").get(
                    pk=user.pk
                )
                mine = self.active().filter(user=user)
                if mine.filter(name=name).exists():
                    raise duplicate
                if mine.count() >= API_TOKENS_PER_USER:
                    raise TokenRefused(
                        f"You have {API_TOKENS_PER_USER} tokens, the most allowed: revoke one "
                        "you no longer use first.",
                        field=None,
                    )
                plaintext = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_SECRET_BYTES)
                token = self.create(
                    user=user,
                    name=name,
                    prefix=plaintext[:TOKEN_DISPLAY_LENGTH],
                    digest=token_digest(plaintext),
                )
        except IntegrityError:
            raise duplicate from None  # the name's unique constraint, in a race
        return token, plaintext

    def authenticate(self, plaintext: str) -> ApiToken | None:
        """The active token whose secret this is, with its user, or None (also for a revoked
        token and an inactive user's token). Marks it used."""
        if not _TOKEN_FORMAT.fullmatch(plaintext):
            return None  # no query for text that cannot be a token
        presented = token_digest(plaintext)
        token = (
            self.active()
            .filter(digest=presented, user__is_active=True)
            .select_related("user")
            .first()
        )
        # The lookup compares digests, not secrets: timing can at most reveal a prefix of a
        # digest, which says nothing about any secret. The comparison below is belt and braces.
        if token is None or not hmac.compare_digest(token.digest, presented):
            return None
        token.mark_used()
        return token


def _token_name(value: Any) -> str:
    name = value.strip() if isinstance(value, str) else ""
    if not name:
        raise TokenRefused("Give the token a name.")
    if len(name) > TOKEN_NAME_MAX_LENGTH:
        raise TokenRefused(
            f"The name is {len(name):,} characters long; at most {TOKEN_NAME_MAX_LENGTH} are "
            "allowed."
        )
    problem = unstorable(name)
    if problem or not name.isprintable():
        raise TokenRefused("The name " + (problem or "contains control characters") + ".")
    return name


#: Active tokens one user may hold: enough for every script, few enough to review at a glance.
API_TOKENS_PER_USER = 20
TOKEN_NAME_MAX_LENGTH = 100
#: A polling client uses its token every few seconds: its last use is written at most this often.
TOKEN_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class ApiToken(models.Model):
    """A user's personal API token: `Authorization: Bearer <token>` acts as that user.

    Only the SHA-256 digest of the secret is stored. A fast hash is right here, unlike for
    passwords: the secret is 256 random bits from `secrets`, so there is nothing to guess and
    a slow hash (PBKDF2, argon2) would only slow down every API request. The digest is unique,
    so a presented token is found with one indexed lookup. `prefix` (the first characters,
    not enough to use) lets its owner recognise it in a list.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        on_delete=models.CASCADE,
        related_name="api_tokens",
    )
    name = models.CharField(_("name"), max_length=TOKEN_NAME_MAX_LENGTH)
    prefix = models.CharField(_("prefix"), max_length=16)
    digest = models.CharField(_("SHA-256 digest"), max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=Q(revoked_at__isnull=True),
                name="api_token_active_name_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def mark_used(self) -> None:
        """Records a use, at most once per TOKEN_LAST_USED_RESOLUTION (no write otherwise)."""
        now = timezone.now()
        since = now - TOKEN_LAST_USED_RESOLUTION
        if self.last_used_at is not None and self.last_used_at >= since:
            return
        ApiToken.objects.filter(pk=self.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=since)
        ).update(last_used_at=now)
        self.last_used_at = now

    def revoke(self) -> bool:
        """Active → revoked; False when it was revoked already."""
        revoked = ApiToken.objects.filter(pk=self.pk).revoke()
        if revoked:
            self.refresh_from_db(fields=["revoked_at"])
        return bool(revoked)
