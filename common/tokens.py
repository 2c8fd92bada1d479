"""Bearer authentication for both JSON APIs: personal API tokens and the operator's
RECOVERY_API_TOKEN, read from `Authorization: Bearer <token>`, with failed tokens throttled.

It returns facts (who the bearer is, or why it was refused); `common.jsonapi` turns them
into answers. `issue_token` is the one way other code creates a personal token.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from .conf import conf
from .models import ApiToken
from .throttle import API_TOKEN


def issue_token(user: Any, name: str) -> tuple[ApiToken, str]:
    """A new personal token for `user` and its plaintext (shown once, never stored).

    Raises `common.models.TokenRefused` for a bad or duplicate name or too many tokens.
    """
    return ApiToken.objects.issue(user, name)


class Refusal(enum.Enum):
    """Why a bearer was refused."""

    MALFORMED = "malformed"  # not `Bearer <token>`
    INVALID = "invalid"  # unknown, revoked, or its user is inactive
    THROTTLED = "throttled"  # too many failures from this client


class BearerRefused(Exception):
    def __init__(self, refusal: Refusal, retry_after: int | None = None) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal
        self.retry_after = retry_after


@dataclass(frozen=True)
class Bearer:
    """An authenticated bearer: a personal token (with its user), or the operator token
    (no user, no token row)."""

    token: ApiToken | None

    @property
    def user(self) -> Any:
        return None if self.token is None else self.token.user

    @property
    def is_operator(self) -> bool:
        return self.token is None


def authenticate_bearer(request: HttpRequest) -> Bearer | None:
    """The request's bearer, or None when it sends no Authorization header.

    Raises `BearerRefused`: every malformed header and wrong token counts against the client
    (API_TOKEN throttle), and a client over the limit is refused whatever it sends.
    """
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    retry_after = API_TOKEN.retry_after(request)
    if retry_after is not None:
        raise BearerRefused(Refusal.THROTTLED, retry_after)
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        API_TOKEN.count(request)
        raise BearerRefused(Refusal.MALFORMED)
    operator = conf.RECOVERY_API_TOKEN
    if operator and hmac.compare_digest(credentials.encode(), operator.encode()):
        return Bearer(token=None)
    token = ApiToken.objects.authenticate(credentials)
    if token is None:
        API_TOKEN.count(request)
        raise BearerRefused(Refusal.INVALID)
    return Bearer(token=token)
