"""System checks for the recovery settings: a bad value stops every server and command."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error

from .conf import PARSERS, parse_api_token, raw

HINTS = {
    "STUCK_RUN_TIMEOUT_MINUTES": "Set it to a whole number of minutes greater than 0, e.g. 5.",
    "RECOVERY_ON_STARTUP": "Set it to true or false.",
    "RECOVERY_HEARTBEAT_SECONDS": "Set it to a whole number of seconds greater than 0, e.g. 10.",
    "RECOVERY_WORKER_TIMEOUT_SECONDS": "Set it to a whole number of seconds, at least three "
    "heartbeats, e.g. 30.",
    "RECOVERY_SWEEP_INTERVAL_SECONDS": "Set it to a whole number of seconds, e.g. 10, or 0 to "
    "turn periodic sweeps off.",
    "RECOVERY_SHUTDOWN_GRACE_SECONDS": "Set it to a whole number of seconds greater than 0, "
    "e.g. 10.",
    "RECOVERY_MAX_ATTEMPTS": "Set it to a whole number greater than 0, e.g. 3.",
    "RECOVERY_RUN_TASK": "Set it to the dotted path of the task that executes a run, e.g. "
    "qualifier.tasks.execute_run.",
    "RECOVERY_HOSTNAME": "Leave it empty to use the machine's host name, or set a name of at "
    "most 255 printable ASCII characters.",
    "METRICS_ALLOWED_NETWORKS": "Set it to comma-separated networks such as "
    "10.0.0.0/8,127.0.0.1/32, or leave it empty.",
    "RECOVERY_POLICY": "Set it to fail (a dead run is failed, keeping its results) or resume "
    "(a dead run goes back to the queue and continues where it stopped).",
    "AUTH_FAILURE_LIMIT": "Set it to the number of failed sign-ins or API tokens a client may "
    "make per window, e.g. 10.",
    "AUTH_FAILURE_WINDOW_SECONDS": "Set it to a whole number of seconds, e.g. 300.",
    "AUTH_CLIENT_IP_HEADER": "Set it to a header name such as X-Forwarded-For, or leave it empty.",
    "RECOVERY_EVENT_RETENTION_DAYS": "Set it to the days recovery events are kept, e.g. 365 "
    "(at least QUALIFIER_RUN_RETENTION_DAYS).",
    "AUTH_TRUSTED_PROXIES": "Set it to the comma-separated networks of your proxies, such as "
    "127.0.0.1,::1 or 10.0.0.0/8, or leave it empty.",
}
IDS = {
    "STUCK_RUN_TIMEOUT_MINUTES": "recovery.E001",
    "RECOVERY_ON_STARTUP": "recovery.E002",
    "RECOVERY_HEARTBEAT_SECONDS": "recovery.E003",
    "RECOVERY_SWEEP_INTERVAL_SECONDS": "recovery.E005",
    "RECOVERY_WORKER_TIMEOUT_SECONDS": "recovery.E006",
    "RECOVERY_SHUTDOWN_GRACE_SECONDS": "recovery.E008",
    "RECOVERY_MAX_ATTEMPTS": "recovery.E009",
    "RECOVERY_RUN_TASK": "recovery.E010",
    "RECOVERY_HOSTNAME": "recovery.E015",
    "AUTH_FAILURE_LIMIT": "recovery.E012",
    "AUTH_FAILURE_WINDOW_SECONDS": "recovery.E013",
    "AUTH_CLIENT_IP_HEADER": "recovery.E014",
    "RECOVERY_POLICY": "recovery.E016",
    "METRICS_ALLOWED_NETWORKS": "recovery.E018",
    "AUTH_TRUSTED_PROXIES": "recovery.E019",
    "RECOVERY_EVENT_RETENTION_DAYS": "recovery.E021",
}


def check_recovery_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name, parse in PARSERS.items():
        if name in ("RECOVERY_API_TOKEN", "METRICS_TOKEN"):
            continue  # check_api_token, whatever the other settings say
        value = raw(name)
        try:
            parse(value)
        except ValueError as exc:
            errors.append(
                Error(f"Setting {name} is invalid: {exc}.", hint=HINTS[name], id=IDS[name])
            )
    if not errors:
        errors.extend(check_heartbeat_fits_timeout())
        errors.extend(check_worker_timeout_covers_beats())
        errors.extend(check_client_ip_header_has_proxies())
    errors.extend(check_api_token())
    errors.extend(
        check_api_token("METRICS_TOKEN", "recovery.E017", "turn /metrics token authentication off")
    )
    return errors


def check_worker_timeout_covers_beats() -> list[CheckMessage]:
    """A worker may miss a beat or two (a slow database); three missed beats mean it is dead."""
    heartbeat = PARSERS["RECOVERY_HEARTBEAT_SECONDS"](raw("RECOVERY_HEARTBEAT_SECONDS"))
    timeout = PARSERS["RECOVERY_WORKER_TIMEOUT_SECONDS"](raw("RECOVERY_WORKER_TIMEOUT_SECONDS"))
    if timeout >= 3 * heartbeat:
        return []
    return [
        Error(
            f"RECOVERY_WORKER_TIMEOUT_SECONDS ({timeout}) must be at least three heartbeats "
            f"(3 x RECOVERY_HEARTBEAT_SECONDS = {3 * heartbeat} s).",
            hint="Otherwise one slow beat would make a live worker look dead and fail its runs.",
            id="recovery.E007",
        )
    ]


def check_client_ip_header_has_proxies() -> list[CheckMessage]:
    """A forwarded-address header is believed only from a trusted proxy: without any, it
    would be ignored, and every client behind the proxy would count as the proxy."""
    header = PARSERS["AUTH_CLIENT_IP_HEADER"](raw("AUTH_CLIENT_IP_HEADER"))
    proxies = PARSERS["AUTH_TRUSTED_PROXIES"](raw("AUTH_TRUSTED_PROXIES"))
    if not header or proxies:
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


def check_api_token(
    name: str = "RECOVERY_API_TOKEN",
    check_id: str = "recovery.E011",
    empty_means: str = "have no operator token (staff users' personal tokens still work)",
) -> list[CheckMessage]:
    """A bearer token is a credential that needs no CSRF token: it must not be guessable."""
    try:
        parse_api_token(raw(name))
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
