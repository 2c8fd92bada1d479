"""Limits failed authentication per client: sign-ins and old-password checks
(qualifier.middleware, qualifier.accounts), password reset requests, and API bearer tokens
(common.tokens).

Each client may fail AUTH_FAILURE_LIMIT times per AUTH_FAILURE_WINDOW_SECONDS; after that it
gets 429 with Retry-After until the window ends, whatever it sends. Counts live in Django's
default cache, which is the database cache by default, so every process and host counts
together.

A client is its connection's address (REMOTE_ADDR). Behind proxies, AUTH_CLIENT_IP_HEADER
(e.g. X-Forwarded-For) is read only when the connection comes from AUTH_TRUSTED_PROXIES; the
client is then the right-most address of that header that is not itself a trusted proxy (each
proxy appends the address it received the request from, so everything to the left of that was
written by the client and is ignored). An entry that is not an IP address ends the walk.
"""

from __future__ import annotations

import logging
import math
import time
from ipaddress import IPv4Address, IPv6Address, ip_address

from django.core.cache import cache
from django.http import HttpRequest

from .conf import conf

logger = logging.getLogger("common.throttle")

IPAddress = IPv4Address | IPv6Address

#: Entries of the forwarded header looked at, from the right: more proxies than this in a row
#: is a misconfiguration, and a client must not make us parse a header of thousands.
MAX_PROXY_HOPS = 20


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> IPAddress | None:
    """The client's address (see the module's docstring), or None when the connection has
    none that parses (a Unix socket)."""
    peer = _parse_address(request.META.get("REMOTE_ADDR", ""))
    header = conf.AUTH_CLIENT_IP_HEADER
    proxies = conf.AUTH_TRUSTED_PROXIES
    if peer is None or not header or not proxies:
        return peer

    def trusted(address: IPAddress) -> bool:
        return any(address in network for network in proxies)

    client = peer
    entries = request.headers.get(header, "").rsplit(",", MAX_PROXY_HOPS)
    for entry in reversed(entries[-MAX_PROXY_HOPS:]):
        if not trusted(client):
            break
        forwarded = _parse_address(entry)
        if forwarded is None:
            break
        client = forwarded
    return client


def client_address(request: HttpRequest) -> str:
    """The client's address as text, for counting and logging."""
    address = client_ip(request)
    if address is None:
        return request.META.get("REMOTE_ADDR", "")[:100] or "unknown"
    return str(address)


class Throttle:
    """Failed attempts of one kind (`scope`), counted per client over a fixed window."""

    def __init__(self, scope: str, description: str, counted: str) -> None:
        self.scope = scope
        self.description = description
        #: How the log names one counted attempt ("Failed sign-in").
        self.counted = counted

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

    def count(self, request: HttpRequest) -> None:
        """Counts one attempt of this client (the window starts with its first one)."""
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
        logger.info("%s from %s (%s in this window)", self.counted, client, count)


#: Failed sign-ins, and wrong old passwords in the password-change form: both guess a password.
SIGN_IN = Throttle("sign-in", "sign-in", "Failed sign-in")
API_TOKEN = Throttle("api-token", "API token", "Failed API token")
#: Every password reset request counts: each one may send a mail.
PASSWORD_RESET = Throttle("password-reset", "password reset", "Password reset request")
