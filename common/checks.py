"""System checks for the throttle's and bearer authentication's settings: a bad value stops
every server and command. Their IDs are the ones they had in the recovery app."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error

from .conf import PARSERS, parse_api_token, raw

HINTS = {
    "AUTH_FAILURE_LIMIT": "Set it to the number of failed sign-ins or API tokens a client may "
    "make per window, e.g. 10.",
    "AUTH_FAILURE_WINDOW_SECONDS": "Set it to a whole number of seconds, e.g. 300.",
    "AUTH_CLIENT_IP_HEADER": "Set it to a header name such as X-Forwarded-For, or leave it empty.",
}
IDS = {
    "AUTH_FAILURE_LIMIT": "recovery.E012",
    "AUTH_FAILURE_WINDOW_SECONDS": "recovery.E013",
    "AUTH_CLIENT_IP_HEADER": "recovery.E014",
}


def check_common_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name in IDS:
        try:
            PARSERS[name](raw(name))
        except ValueError as exc:
            errors.append(
                Error(f"Setting {name} is invalid: {exc}.", hint=HINTS[name], id=IDS[name])
            )
    errors.extend(
        check_api_token(
            "RECOVERY_API_TOKEN",
            raw("RECOVERY_API_TOKEN"),
            "recovery.E011",
            "have no operator token (staff users' personal tokens still work)",
        )
    )
    return errors


def check_api_token(name: str, value: Any, check_id: str, empty_means: str) -> list[CheckMessage]:
    """A bearer token is a credential that needs no CSRF token: it must not be guessable."""
    try:
        parse_api_token(value)
    except ValueError as problem:
        return [
            Error(
                f"Setting {name} is invalid: {problem}.",
                hint="Generate one with: python -c 'import secrets; "
                f"print(secrets.token_urlsafe(32))', or leave it empty to {empty_means}.",
                id=check_id,
            )
        ]
    return []
