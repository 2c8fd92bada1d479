"""One reader per kind of value that settings hold beyond common.inputs's numbers and booleans:
bounded numbers, choices, dotted paths, networks, header and host names, secrets.

settings.py reads the environment's text through them (qualifier/environment.py), and the
system checks run a value set in Python (a settings module, `override_settings`) through the
same reader. Each raises `ValueError` with a clause that starts with the value.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from .inputs import parse_whole_number, show

#: A day: longer waits overflow the thread timers that use them.
MAX_INTERVAL_SECONDS = 24 * 60 * 60
#: A bearer token set in the settings that is shorter than this is guessable.
MIN_TOKEN_LENGTH = 32


def parse_bounded(value: Any, *, minimum: int = 1, maximum: int = MAX_INTERVAL_SECONDS) -> int:
    """A whole number from `minimum` to `maximum` (common.inputs's rules: ASCII digits)."""
    try:
        return parse_whole_number(value, minimum=minimum, maximum=maximum)
    except ValueError:
        kind = "positive integer" if minimum == 1 else "whole number"
        raise ValueError(f"{show(value)} is not a {kind} ({minimum:,} to {maximum:,})") from None


def parse_choice(value: Any, choices: Iterable[str]) -> str:
    """One of `choices`, in any case, spaces around allowed; returns it as `choices` spell it."""
    choices = tuple(choices)
    if isinstance(value, str):
        word = value.strip().casefold()
        for choice in choices:
            if word == choice.casefold():
                return choice
    raise ValueError(f"{show(value)} is not one of {', '.join(choices)}")


def parse_dotted_path(value: Any) -> str:
    """The dotted path of something to import, such as 'myapp.tasks.execute_run'."""
    text = value.strip() if isinstance(value, str) else ""
    parts = text.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise ValueError(f"{show(value)} is not a dotted path such as 'package.module.name'")
    return text


def parse_networks(value: Any) -> tuple[IPv4Network | IPv6Network, ...]:
    """Comma-separated networks (CIDRs or single addresses), or a list of them; "" for none."""
    if isinstance(value, (list, tuple)):
        items = [str(item).strip() for item in value]
    elif isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    else:
        raise ValueError(f"{show(value)} is not a comma-separated list of networks")
    networks = []
    for item in filter(None, items):
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{show(item)} is not a network such as 10.0.0.0/8") from None
    return tuple(networks)


def parse_header_name(value: Any) -> str:
    """A request header's name such as X-Forwarded-For, or "" for none."""
    if value == "":
        return ""
    text = value.strip() if isinstance(value, str) else ""
    if not text or not all(char.isascii() and (char.isalnum() or char in "-_") for char in text):
        raise ValueError(f"{show(value)} is not a header name such as X-Forwarded-For")
    return text


def parse_host_name(value: Any) -> str:
    """A host name of printable ASCII, at most 255 characters; "" for the machine's own."""
    text = value.strip() if isinstance(value, str) else None
    if text is None or len(text) > 255 or not (text.isascii() and text.isprintable()):
        raise ValueError(
            f"{show(value)} is not a host name (printable ASCII, at most 255 characters)"
        )
    return text


def parse_secret(value: Any) -> str:
    """A bearer token set by an operator: a credential that needs no CSRF token, so it must not
    be guessable. "" means there is none."""
    if value == "":
        return ""
    if not isinstance(value, str):
        problem = f"is a {type(value).__name__}, not text"
    elif len(value) < MIN_TOKEN_LENGTH:
        problem = f"is {len(value)} characters long; at least {MIN_TOKEN_LENGTH} are needed"
    elif value != value.strip() or not value.isascii() or not value.isprintable():
        problem = "must be printable ASCII without spaces around it"
    else:
        return value
    # Never repeat a secret in a message, not even a wrong one.
    raise ValueError(f"the token {problem}")
