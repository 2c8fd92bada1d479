"""The settings of the sign-in and bearer throttle and of bearer authentication, read as plain
attributes (`conf.AUTH_FAILURE_LIMIT`) so that `override_settings` works.

settings.py types them from the environment; common/checks.py judges values set in Python.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "AUTH_FAILURE_LIMIT": 10,
    "AUTH_FAILURE_WINDOW_SECONDS": 300,
    "AUTH_CLIENT_IP_HEADER": "",
    "AUTH_TRUSTED_PROXIES": (),
    "RECOVERY_API_TOKEN": "",
}


def _get(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class CommonSettings:
    @property
    def AUTH_FAILURE_LIMIT(self) -> int:
        """Failed sign-ins or bearer tokens a client may make per window before a 429."""
        return _get("AUTH_FAILURE_LIMIT")

    @property
    def AUTH_FAILURE_WINDOW_SECONDS(self) -> int:
        return _get("AUTH_FAILURE_WINDOW_SECONDS")

    @property
    def AUTH_CLIENT_IP_HEADER(self) -> str:
        """Behind proxies, the header that carries the client's address (read only from
        AUTH_TRUSTED_PROXIES); "" for none."""
        return _get("AUTH_CLIENT_IP_HEADER")

    @property
    def AUTH_TRUSTED_PROXIES(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """Networks of the proxies whose AUTH_CLIENT_IP_HEADER is believed; empty for none."""
        return _get("AUTH_TRUSTED_PROXIES")

    @property
    def RECOVERY_API_TOKEN(self) -> str:
        """The recovery API's operator token; "" for none."""
        return _get("RECOVERY_API_TOKEN")


conf = CommonSettings()
