"""System checks for the throttle's and bearer authentication's settings (IDs as they were in
the recovery app), and `check_values`, which every app's checks use.

settings.py has typed what came from the environment; these judge what was set in Python (a
settings module, `override_settings`) by the same reader, so a bad value stops every server
and command with its name and a hint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from django.core.checks import CheckMessage, Error

from .conf import conf
from .inputs import show
from .values import parse_bounded, parse_header_name, parse_networks, parse_secret

#: For each setting: the reader of its kind, the check's ID and a hint.
Rules = Mapping[str, tuple[Callable[[Any], Any], str, str]]

GENERATE_HINT = (
    "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))', or "
    "leave it empty to {}."
)
RULES: Rules = {
    "AUTH_FAILURE_LIMIT": (
        partial(parse_bounded, minimum=1),
        "recovery.E012",
        "Set it to the number of failed sign-ins or API tokens a client may make per window, "
        "e.g. 10.",
    ),
    "AUTH_FAILURE_WINDOW_SECONDS": (
        partial(parse_bounded, minimum=1),
        "recovery.E013",
        "Set it to a whole number of seconds, e.g. 300.",
    ),
    "AUTH_CLIENT_IP_HEADER": (
        parse_header_name,
        "recovery.E014",
        "Set it to a header name such as X-Forwarded-For, or leave it empty.",
    ),
    "AUTH_TRUSTED_PROXIES": (
        parse_networks,
        "recovery.E019",
        "Set it to the comma-separated networks of your proxies, such as 127.0.0.1,::1 or "
        "10.0.0.0/8, in the environment (in Python: a tuple of ipaddress networks), or leave "
        "it empty.",
    ),
    "RECOVERY_API_TOKEN": (
        parse_secret,
        "recovery.E011",
        GENERATE_HINT.format("have no operator token (staff users' personal tokens still work)"),
    ),
}


def check_value(name: str, value: Any, rule: tuple[Callable[[Any], Any], str, str]) -> list[Error]:
    """`value` judged by the reader of its kind: an error when the reader refuses it, and when
    it is not what the reader makes of it (the text "5" where the setting holds the number 5:
    only the environment's values are text, and settings.py reads those)."""
    read, check_id, hint = rule
    try:
        expected = read(value)
    except ValueError as exc:
        return [Error(f"Setting {name} is invalid: {exc}.", hint=hint, id=check_id)]
    if type(expected) is type(value) and expected == value:
        return []
    problem = f"{show(value)} should be given as {show(expected)}"
    return [Error(f"Setting {name} is invalid: {problem}.", hint=hint, id=check_id)]


def check_values(app_conf: Any, rules: Rules) -> list[CheckMessage]:
    """Every setting in `rules`, read through the app's conf object."""
    return [
        error
        for name, rule in rules.items()
        for error in check_value(name, getattr(app_conf, name), rule)
    ]


def check_common_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors = check_values(conf, RULES)
    if not any(error.id in {"recovery.E014", "recovery.E019"} for error in errors):
        errors.extend(check_client_ip_header_has_proxies())
    return errors


def check_client_ip_header_has_proxies() -> list[CheckMessage]:
    """A forwarded-address header is believed only from a trusted proxy: without any, it
    would be ignored, and every client behind the proxy would count as the proxy."""
    header = conf.AUTH_CLIENT_IP_HEADER
    if not header or conf.AUTH_TRUSTED_PROXIES:
        return []
    return [
        Error(
            f"AUTH_CLIENT_IP_HEADER is {header!r} but AUTH_TRUSTED_PROXIES is empty: the header "
            "would never be read.",
            hint="Set AUTH_TRUSTED_PROXIES to the networks your proxies connect from (e.g. "
            "127.0.0.1,::1 for a proxy on this machine), or leave AUTH_CLIENT_IP_HEADER empty.",
            id="recovery.E020",
        )
    ]
