"""The recovery app's settings, read lazily so that `override_settings` works in tests.

Values may come straight from the environment as strings; `parse_*` turns them into Python
values and raises `ValueError` with a readable message, which the system checks report.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

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
    "RECOVERY_POLICY": "fail",
    "AUTH_FAILURE_LIMIT": 10,
    "AUTH_FAILURE_WINDOW_SECONDS": 300,
}

#: Ten years: a longer timeout would reach before year 1 and overflow a date.
MAX_TIMEOUT_MINUTES = 10 * 365 * 24 * 60
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


def parse_dotted_path(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    parts = text.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise ValueError(f"{value!r} is not a dotted path such as 'myapp.tasks.execute_run'")
    return text


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
    "RECOVERY_POLICY": parse_policy,
    "AUTH_FAILURE_LIMIT": parse_positive_int,
    "AUTH_FAILURE_WINDOW_SECONDS": parse_positive_int,
}


def raw(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class RecoverySettings:
    """Typed access to the settings; the system checks guarantee they parse."""

    @property
    def STUCK_RUN_TIMEOUT_MINUTES(self) -> int:
        return parse_timeout_minutes(raw("STUCK_RUN_TIMEOUT_MINUTES"))

    @property
    def RECOVERY_ON_STARTUP(self) -> bool:
        return parse_bool(raw("RECOVERY_ON_STARTUP"))

    @property
    def RECOVERY_HEARTBEAT_SECONDS(self) -> int:
        return parse_positive_int(raw("RECOVERY_HEARTBEAT_SECONDS"))

    @property
    def RECOVERY_WORKER_TIMEOUT_SECONDS(self) -> int:
        """A worker that has not beaten for this long is dead, and so are its runs."""
        return parse_positive_int(raw("RECOVERY_WORKER_TIMEOUT_SECONDS"))

    @property
    def RECOVERY_SWEEP_INTERVAL_SECONDS(self) -> int:
        """Seconds between periodic sweeps in each server and worker; 0 turns them off."""
        return parse_non_negative_int(raw("RECOVERY_SWEEP_INTERVAL_SECONDS"))

    @property
    def RECOVERY_SHUTDOWN_GRACE_SECONDS(self) -> int:
        """How long a stopping worker may take to finish its batch before it is cut off."""
        return parse_positive_int(raw("RECOVERY_SHUTDOWN_GRACE_SECONDS"))

    @property
    def RECOVERY_MAX_ATTEMPTS(self) -> int:
        """A run whose worker died this many times is failed instead of handed back again."""
        return parse_positive_int(raw("RECOVERY_MAX_ATTEMPTS"))

    @property
    def RECOVERY_RUN_TASK(self) -> str:
        """The django.tasks task that executes a run, called with the run's id."""
        return parse_dotted_path(raw("RECOVERY_RUN_TASK"))

    @property
    def RECOVERY_POLICY(self) -> str:
        """`fail` a dead run (keeping its results), or `resume` it: back to the queue."""
        return parse_policy(raw("RECOVERY_POLICY"))

    @property
    def AUTH_FAILURE_LIMIT(self) -> int:
        """Failed sign-ins or bearer tokens a client may make per window before a 429."""
        return parse_positive_int(raw("AUTH_FAILURE_LIMIT"))

    @property
    def AUTH_FAILURE_WINDOW_SECONDS(self) -> int:
        return parse_positive_int(raw("AUTH_FAILURE_WINDOW_SECONDS"))


conf = RecoverySettings()
