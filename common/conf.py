"""The settings of the sign-in and bearer throttle and of bearer authentication, and the one
object that reads them (`conf`); also what the apps' conf modules share (`ParsedSettings`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from .inputs import parse_whole_number, show

DEFAULTS: dict[str, Any] = {
    "AUTH_FAILURE_LIMIT": 10,
    "AUTH_FAILURE_WINDOW_SECONDS": 300,
    "AUTH_CLIENT_IP_HEADER": "",
    "RECOVERY_API_TOKEN": "",
}

#: A day: longer waits overflow the thread timers that use them.
MAX_INTERVAL_SECONDS = 24 * 60 * 60


def parse_positive_int(value: Any, *, maximum: int = MAX_INTERVAL_SECONDS) -> int:
    try:
        return parse_whole_number(value, minimum=1, maximum=maximum)
    except ValueError:
        raise ValueError(f"{show(value)} is not a positive integer (1 to {maximum:,})") from None


#: A bearer token set in the settings that is shorter than this is guessable.
MIN_TOKEN_LENGTH = 32


def parse_api_token(value: Any) -> str:
    """An operator's bearer token: a credential that needs no CSRF token, so it must not be
    guessable. Empty: there is none (personal tokens work either way)."""
    if not value:
        return ""
    if not isinstance(value, str):
        problem = f"it is a {type(value).__name__}, not text"
    elif len(value) < MIN_TOKEN_LENGTH:
        problem = f"it is {len(value)} characters long; at least {MIN_TOKEN_LENGTH} are needed"
    elif value != value.strip() or not value.isascii() or not value.isprintable():
        problem = "it must be printable ASCII without spaces around it"
    else:
        return value
    raise ValueError(problem)


def parse_header_name(value: Any) -> str:
    """The request header that carries the client's address behind a proxy, or ""."""
    if not value:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not a header name")
    return value.strip()


PARSERS = {
    "AUTH_FAILURE_LIMIT": parse_positive_int,
    "AUTH_FAILURE_WINDOW_SECONDS": parse_positive_int,
    "AUTH_CLIENT_IP_HEADER": parse_header_name,
    "RECOVERY_API_TOKEN": parse_api_token,
}


def raw(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class ParsedSettings:
    """One app's settings, each parsed once by its parser and kept until a setting of the app
    changes (Django's `setting_changed`, which `override_settings` sends)."""

    def __init__(self, parsers: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        self._parsers = parsers
        self._defaults = defaults
        self._parsed: dict[str, Any] = {}
        setting_changed.connect(self._setting_changed, weak=False)

    def _get(self, name: str) -> Any:
        try:
            return self._parsed[name]
        except KeyError:
            raw_value = getattr(settings, name, self._defaults[name])
            value = self._parsed[name] = self._parsers[name](raw_value)
            return value

    def clear(self) -> None:
        """Forget the parsed values."""
        self._parsed.clear()

    def _setting_changed(self, *, setting: str, **kwargs: Any) -> None:
        if setting in self._defaults:
            self.clear()


class CommonSettings(ParsedSettings):
    """Typed access to the settings, each parsed once; the system checks guarantee they parse."""

    def __init__(self) -> None:
        super().__init__(PARSERS, DEFAULTS)

    @property
    def AUTH_FAILURE_LIMIT(self) -> int:
        """Failed sign-ins or bearer tokens a client may make per window before a 429."""
        return self._get("AUTH_FAILURE_LIMIT")

    @property
    def AUTH_FAILURE_WINDOW_SECONDS(self) -> int:
        return self._get("AUTH_FAILURE_WINDOW_SECONDS")

    @property
    def AUTH_CLIENT_IP_HEADER(self) -> str:
        """Behind a proxy, the header whose last address is the client's; "" for none."""
        return self._get("AUTH_CLIENT_IP_HEADER")

    @property
    def RECOVERY_API_TOKEN(self) -> str:
        """The recovery API's operator token; "" for none."""
        return self._get("RECOVERY_API_TOKEN")


conf = CommonSettings()
