"""The recovery app's settings: their defaults, their parsers, and the one object that reads
them (`conf`).

Values may come straight from the environment as strings; `parse_*` turns them into Python
values and raises `ValueError` with a readable message, which the system checks report. Each
value is parsed once and kept; `override_settings` still works in tests because Django's
`setting_changed` signal clears what was kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from .inputs import parse_bool, parse_whole_number, show

DEFAULTS: dict[str, Any] = {
    "STUCK_RUN_TIMEOUT_MINUTES": 5,
    "RECOVERY_ON_STARTUP": True,
    "RECOVERY_HEARTBEAT_SECONDS": 10,
    "RECOVERY_WORKER_TIMEOUT_SECONDS": 30,
    "RECOVERY_SWEEP_INTERVAL_SECONDS": 10,
    "RECOVERY_SHUTDOWN_GRACE_SECONDS": 10,
    "RECOVERY_MAX_ATTEMPTS": 3,
    "RECOVERY_RUN_TASK": "qualifier.tasks.execute_run",
    "RECOVERY_HOSTNAME": "",
    "RECOVERY_POLICY": "fail",
    "AUTH_FAILURE_LIMIT": 10,
    "AUTH_FAILURE_WINDOW_SECONDS": 300,
    "AUTH_CLIENT_IP_HEADER": "",
    "AUTH_TRUSTED_PROXIES": "",
    "RECOVERY_API_TOKEN": "",
    "METRICS_TOKEN": "",
    "METRICS_ALLOWED_NETWORKS": "",
    "RECOVERY_EVENT_RETENTION_DAYS": 365,
}

#: Ten years: a longer timeout would reach before year 1 and overflow a date.
MAX_TIMEOUT_MINUTES = 10 * 365 * 24 * 60
#: A hundred years: retention is counted in days, and a longer one is "forever".
MAX_RETENTION_DAYS = 36_500
#: A day: longer waits overflow the thread timers that use them.
MAX_INTERVAL_SECONDS = 24 * 60 * 60


def parse_positive_int(value: Any, *, maximum: int = MAX_INTERVAL_SECONDS) -> int:
    try:
        return parse_whole_number(value, minimum=1, maximum=maximum)
    except ValueError:
        raise ValueError(f"{show(value)} is not a positive integer (1 to {maximum:,})") from None


def parse_timeout_minutes(value: Any) -> int:
    """Minutes of silence after which a run is stuck: 1 to ten years' worth."""
    return parse_positive_int(value, maximum=MAX_TIMEOUT_MINUTES)


def parse_non_negative_int(value: Any) -> int:
    try:
        return parse_whole_number(value, minimum=0, maximum=MAX_INTERVAL_SECONDS)
    except ValueError:
        raise ValueError(
            f"{show(value)} is not a whole number (0 to {MAX_INTERVAL_SECONDS:,})"
        ) from None


def parse_retention_days(value: Any) -> int:
    try:
        return parse_whole_number(value, minimum=1, maximum=MAX_RETENTION_DAYS)
    except ValueError:
        raise ValueError(
            f"{show(value)} is not a whole number of days (1 to {MAX_RETENTION_DAYS:,})"
        ) from None


def parse_dotted_path(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    parts = text.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise ValueError(f"{value!r} is not a dotted path such as 'myapp.tasks.execute_run'")
    return text


def parse_host_name(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else None
    if text is None or len(text) > 255 or not (text.isascii() and text.isprintable()):
        raise ValueError(f"{value!r} is not a host name (printable ASCII, at most 255 characters)")
    return text


#: A recovery API token shorter than this is guessable.
MIN_TOKEN_LENGTH = 32


def parse_api_token(value: Any) -> str:
    """The recovery API's operator token: a credential that needs no CSRF token, so it must
    not be guessable. Empty: there is none (personal tokens work either way)."""
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


def parse_networks(value: Any) -> tuple[IPv4Network | IPv6Network, ...]:
    """Comma-separated CIDRs or single addresses (METRICS_ALLOWED_NETWORKS,
    AUTH_TRUSTED_PROXIES); "" for none."""
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
    """The request header that carries the client's address behind a proxy, or ""."""
    if not value:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not a header name")
    return value.strip()


#: What a sweep does with a dead run: fail it (the original's behaviour), or put it back in the
#: queue so the next worker continues it.
POLICY_FAIL = "fail"
POLICY_RESUME = "resume"
POLICIES = (POLICY_FAIL, POLICY_RESUME)


def parse_policy(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in POLICIES:
        raise ValueError(f"{show(value)} is not one of {', '.join(POLICIES)}")
    return text


PARSERS = {
    "STUCK_RUN_TIMEOUT_MINUTES": parse_timeout_minutes,
    "RECOVERY_ON_STARTUP": parse_bool,
    "RECOVERY_HEARTBEAT_SECONDS": parse_positive_int,
    "RECOVERY_WORKER_TIMEOUT_SECONDS": parse_positive_int,
    "RECOVERY_SWEEP_INTERVAL_SECONDS": parse_non_negative_int,
    "RECOVERY_SHUTDOWN_GRACE_SECONDS": parse_positive_int,
    "RECOVERY_MAX_ATTEMPTS": parse_positive_int,
    "RECOVERY_RUN_TASK": parse_dotted_path,
    "RECOVERY_HOSTNAME": parse_host_name,
    "RECOVERY_POLICY": parse_policy,
    "AUTH_FAILURE_LIMIT": parse_positive_int,
    "AUTH_FAILURE_WINDOW_SECONDS": parse_positive_int,
    "AUTH_CLIENT_IP_HEADER": parse_header_name,
    "AUTH_TRUSTED_PROXIES": parse_networks,
    "RECOVERY_API_TOKEN": parse_api_token,
    "METRICS_TOKEN": parse_api_token,
    "METRICS_ALLOWED_NETWORKS": parse_networks,
    "RECOVERY_EVENT_RETENTION_DAYS": parse_retention_days,
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


class RecoverySettings(ParsedSettings):
    """Typed access to the settings, each parsed once; the system checks guarantee they parse."""

    def __init__(self) -> None:
        super().__init__(PARSERS, DEFAULTS)

    @property
    def STUCK_RUN_TIMEOUT_MINUTES(self) -> int:
        return self._get("STUCK_RUN_TIMEOUT_MINUTES")

    @property
    def RECOVERY_ON_STARTUP(self) -> bool:
        return self._get("RECOVERY_ON_STARTUP")

    @property
    def RECOVERY_HEARTBEAT_SECONDS(self) -> int:
        return self._get("RECOVERY_HEARTBEAT_SECONDS")

    @property
    def RECOVERY_WORKER_TIMEOUT_SECONDS(self) -> int:
        """A worker that has not beaten for this long is dead, and so are its runs."""
        return self._get("RECOVERY_WORKER_TIMEOUT_SECONDS")

    @property
    def RECOVERY_SWEEP_INTERVAL_SECONDS(self) -> int:
        """Seconds between periodic sweeps in each server and worker; 0 turns them off."""
        return self._get("RECOVERY_SWEEP_INTERVAL_SECONDS")

    @property
    def RECOVERY_SHUTDOWN_GRACE_SECONDS(self) -> int:
        """How long a stopping worker may take to finish its batch before it is cut off."""
        return self._get("RECOVERY_SHUTDOWN_GRACE_SECONDS")

    @property
    def RECOVERY_MAX_ATTEMPTS(self) -> int:
        """A run whose worker died this many times is failed instead of handed back again."""
        return self._get("RECOVERY_MAX_ATTEMPTS")

    @property
    def RECOVERY_HOSTNAME(self) -> str:
        """The host name workers register under; empty means the machine's own. A worker's
        process is checked locally only by processes that register under the same name."""
        return self._get("RECOVERY_HOSTNAME")

    @property
    def RECOVERY_RUN_TASK(self) -> str:
        """The django.tasks task that executes a run, called with the run's id."""
        return self._get("RECOVERY_RUN_TASK")

    @property
    def RECOVERY_POLICY(self) -> str:
        """`fail` a dead run (keeping its results), or `resume` it: back to the queue."""
        return self._get("RECOVERY_POLICY")

    @property
    def AUTH_FAILURE_LIMIT(self) -> int:
        """Failed sign-ins or bearer tokens a client may make per window before a 429."""
        return self._get("AUTH_FAILURE_LIMIT")

    @property
    def AUTH_FAILURE_WINDOW_SECONDS(self) -> int:
        return self._get("AUTH_FAILURE_WINDOW_SECONDS")

    @property
    def AUTH_CLIENT_IP_HEADER(self) -> str:
        """Behind proxies, the header that carries the client's address (read only from
        AUTH_TRUSTED_PROXIES); "" for none."""
        return self._get("AUTH_CLIENT_IP_HEADER")

    @property
    def AUTH_TRUSTED_PROXIES(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """Networks of the proxies whose AUTH_CLIENT_IP_HEADER is believed; empty for none."""
        return self._get("AUTH_TRUSTED_PROXIES")

    @property
    def RECOVERY_API_TOKEN(self) -> str:
        """The recovery API's operator token; "" for none."""
        return self._get("RECOVERY_API_TOKEN")

    @property
    def METRICS_TOKEN(self) -> str:
        """The bearer token that may read /metrics; "" for none."""
        return self._get("METRICS_TOKEN")

    @property
    def METRICS_ALLOWED_NETWORKS(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """Client networks that may read /metrics without a token; empty for none."""
        return self._get("METRICS_ALLOWED_NETWORKS")

    @property
    def RECOVERY_EVENT_RETENTION_DAYS(self) -> int:
        """Recovery events (the audit trail) older than this are deleted by `prune_runs`."""
        return self._get("RECOVERY_EVENT_RETENTION_DAYS")


conf = RecoverySettings()
