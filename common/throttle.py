"""Limits failed authentication per client: sign-ins (qualifier.middleware) and API bearer
tokens (recovery.tokens).

Each client may fail AUTH_FAILURE_LIMIT times per AUTH_FAILURE_WINDOW_SECONDS; after that it
gets 429 with Retry-After until the window ends, whatever it sends. Counts live in Django's
cache, so processes share them when the cache is shared (CACHE_URL). A client is its
REMOTE_ADDR, or, behind a proxy, the last address in AUTH_CLIENT_IP_HEADER (the one the proxy
itself appended).
"""

from __future__ import annotations

import logging
import math
import time

from django.core.cache import cache
from django.http import HttpRequest

from .conf import conf

logger = logging.getLogger("recovery.throttle")


def client_address(request: HttpRequest) -> str:
    header = conf.AUTH_CLIENT_IP_HEADER
    if header:
        forwarded = request.headers.get(header, "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:100]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


class Throttle:
    """Failed attempts of one kind (`scope`), counted per client over a fixed window."""

    def __init__(self, scope: str, description: str) -> None:
        self.scope = scope
        self.description = description

    def _keys(self, client: str) -> tuple[str, str]:
        base = f"auth-failures:{self.scope}:{client}"
        return f"{base}:count", f"{base}:until"

    def retry_after(self, request: HttpRequest) -> int | None:
        """Seconds until this client may try again, or None when it may try now."""
        client = client_address(request)
        count_key, until_key = self._keys(client)
        values = cache.get_many([count_key, until_key])
        count, until = values.get(count_key, 0), values.get(until_key)
        if until is None or count < conf.AUTH_FAILURE_LIMIT:
            return None
        seconds = math.ceil(until - time.time())
        if seconds <= 0:
            return None
        logger.warning(
            "Refused %s from %s: %s failed in the last %s s; retry after %s s",
            self.description,
            client,
            count,
            conf.AUTH_FAILURE_WINDOW_SECONDS,
            seconds,
        )
        return seconds

    def failed(self, request: HttpRequest) -> None:
        """Counts one failure of this client (the window starts with its first failure)."""
        client = client_address(request)
        count_key, until_key = self._keys(client)
        window = conf.AUTH_FAILURE_WINDOW_SECONDS
        cache.add(until_key, time.time() + window, timeout=window)
        cache.add(count_key, 0, timeout=window)
        try:
            count = cache.incr(count_key)
        except ValueError:  # expired between add and incr
            cache.set(count_key, 1, timeout=window)
            count = 1
        logger.info("Failed %s from %s (%s in this window)", self.description, client, count)


SIGN_IN = Throttle("sign-in", "sign-in")
API_TOKEN = Throttle("api-token", "API token")
