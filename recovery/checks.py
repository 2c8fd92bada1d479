"""System checks for the recovery settings: a bad value stops every server and command."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error

from .conf import PARSERS, raw

HINTS = {
    "STUCK_RUN_TIMEOUT_MINUTES": "Set it to a whole number of minutes greater than 0, e.g. 5.",
    "RECOVERY_ON_STARTUP": "Set it to true or false.",
    "RECOVERY_HEARTBEAT_SECONDS": "Set it to a whole number of seconds greater than 0, e.g. 10.",
    "RECOVERY_SWEEP_INTERVAL_SECONDS": "Set it to a whole number of seconds, e.g. 60, or 0 to "
    "turn periodic sweeps off.",
}
IDS = {
    "STUCK_RUN_TIMEOUT_MINUTES": "recovery.E001",
    "RECOVERY_ON_STARTUP": "recovery.E002",
    "RECOVERY_HEARTBEAT_SECONDS": "recovery.E003",
    "RECOVERY_SWEEP_INTERVAL_SECONDS": "recovery.E005",
}


def check_recovery_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name, parse in PARSERS.items():
        value = raw(name)
        try:
            parse(value)
        except ValueError as exc:
            errors.append(
                Error(f"Setting {name} is invalid: {exc}.", hint=HINTS[name], id=IDS[name])
            )
    if not errors:
        errors.extend(check_heartbeat_fits_timeout())
    return errors


def check_heartbeat_fits_timeout() -> list[CheckMessage]:
    """A worker that beats less often than the timeout would be failed while alive."""
    heartbeat = PARSERS["RECOVERY_HEARTBEAT_SECONDS"](raw("RECOVERY_HEARTBEAT_SECONDS"))
    timeout = PARSERS["STUCK_RUN_TIMEOUT_MINUTES"](raw("STUCK_RUN_TIMEOUT_MINUTES"))
    if heartbeat * 2 <= timeout * 60:
        return []
    return [
        Error(
            f"RECOVERY_HEARTBEAT_SECONDS ({heartbeat}) must be at most half of "
            f"STUCK_RUN_TIMEOUT_MINUTES ({timeout} min = {timeout * 60} s).",
            hint="Otherwise a live worker can look stuck between two beats and be failed.",
            id="recovery.E004",
        )
    ]
