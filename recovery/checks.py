"""System checks for the recovery settings: a value set in Python is judged by the reader of
its kind (the environment's were read by settings.py), and the timeouts must fit together.
A bad value stops every server and command."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.checks import CheckMessage, Error, Warning

from common.checks import GENERATE_HINT, Rules, check_values
from common.inputs import parse_bool
from common.values import (
    parse_bounded,
    parse_choice,
    parse_dotted_path,
    parse_host_name,
    parse_networks,
    parse_secret,
)

from . import queue
from .conf import (
    MAX_RETENTION_DAYS,
    MAX_SLICE_SIZE,
    MAX_TIMEOUT_MINUTES,
    POLICIES,
    QUEUE_FAIR,
    QUEUE_ORDERS,
    conf,
)

RULES: Rules = {
    "STUCK_RUN_TIMEOUT_MINUTES": (
        partial(parse_bounded, minimum=1, maximum=MAX_TIMEOUT_MINUTES),
        "recovery.E001",
        "Set it to a whole number of minutes greater than 0, e.g. 5.",
    ),
    "RECOVERY_ON_STARTUP": (parse_bool, "recovery.E002", "Set it to True or False."),
    "RECOVERY_HEARTBEAT_SECONDS": (
        partial(parse_bounded, minimum=1),
        "recovery.E003",
        "Set it to a whole number of seconds greater than 0, e.g. 2.",
    ),
    "RECOVERY_SWEEP_INTERVAL_SECONDS": (
        partial(parse_bounded, minimum=0),
        "recovery.E005",
        "Set it to a whole number of seconds, e.g. 2, or 0 to turn periodic sweeps off.",
    ),
    "RECOVERY_WORKER_TIMEOUT_SECONDS": (
        partial(parse_bounded, minimum=1),
        "recovery.E006",
        "Set it to a whole number of seconds, at least three heartbeats, e.g. 8.",
    ),
    "RECOVERY_SHUTDOWN_GRACE_SECONDS": (
        partial(parse_bounded, minimum=1),
        "recovery.E008",
        "Set it to a whole number of seconds greater than 0, e.g. 10.",
    ),
    "RECOVERY_MAX_ATTEMPTS": (
        partial(parse_bounded, minimum=1),
        "recovery.E009",
        "Set it to a whole number greater than 0, e.g. 3.",
    ),
    "RECOVERY_RUN_TASK": (
        parse_dotted_path,
        "recovery.E010",
        "Set it to the dotted path of the task that executes a run, e.g. "
        "qualifier.tasks.execute_run.",
    ),
    "RECOVERY_HOSTNAME": (
        parse_host_name,
        "recovery.E015",
        "Leave it empty to use the machine's host name, or set a name of at most 255 printable "
        "ASCII characters.",
    ),
    "RECOVERY_POLICY": (
        partial(parse_choice, choices=POLICIES),
        "recovery.E016",
        "Set it to fail (a dead run is failed, keeping its results) or resume (a dead run goes "
        "back to the queue and continues where it stopped).",
    ),
    "RECOVERY_QUEUE_ORDER": (
        partial(parse_choice, choices=QUEUE_ORDERS),
        "recovery.E022",
        "Set it to fair (queued runs are taken round robin across their owners) or fifo (in "
        "the order they were queued).",
    ),
    "RECOVERY_SLICE_SIZE": (
        partial(parse_bounded, minimum=1, maximum=MAX_SLICE_SIZE),
        "recovery.E023",
        "Set it to the prospects per slice, a whole number from 1 to 1,000,000, e.g. 100 "
        "(a few seconds of scoring).",
    ),
    "METRICS_TOKEN": (
        parse_secret,
        "recovery.E017",
        GENERATE_HINT.format("turn /metrics token authentication off"),
    ),
    "METRICS_ALLOWED_NETWORKS": (
        parse_networks,
        "recovery.E018",
        "Set it to comma-separated networks such as 10.0.0.0/8,127.0.0.1/32 in the environment "
        "(in Python: a tuple of ipaddress networks), or leave it empty.",
    ),
    "RECOVERY_EVENT_RETENTION_DAYS": (
        partial(parse_bounded, minimum=1, maximum=MAX_RETENTION_DAYS),
        "recovery.E021",
        "Set it to the days recovery events are kept, e.g. 365 (at least "
        "QUALIFIER_RUN_RETENTION_DAYS).",
    ),
}
#: The timeouts' relations are judged only when each of them is valid on its own.
TIMEOUTS = (
    "STUCK_RUN_TIMEOUT_MINUTES",
    "RECOVERY_HEARTBEAT_SECONDS",
    "RECOVERY_WORKER_TIMEOUT_SECONDS",
)


def check_recovery_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors = check_values(conf, RULES)
    if not any(error.id == RULES[name][1] for error in errors for name in TIMEOUTS):
        errors.extend(check_heartbeat_fits_timeout())
        errors.extend(check_worker_timeout_covers_beats())
    if not any(error.id == RULES[name][1] for error in errors for name in QUEUE_SETTINGS):
        errors.extend(check_fair_queue_can_be_kept())
    return errors


QUEUE_SETTINGS = ("RECOVERY_QUEUE_ORDER", "RECOVERY_RUN_TASK")


def check_fair_queue_can_be_kept() -> list[CheckMessage]:
    """A fair queue is kept with task priorities; a backend without them takes every run first
    come, first served, whatever the setting says."""
    if conf.RECOVERY_QUEUE_ORDER != QUEUE_FAIR:
        return []
    try:
        if queue.takes_priorities():
            return []
    except Exception:  # a task or backend that cannot be loaded: Django's own checks say so
        return []
    return [
        Warning(
            "RECOVERY_QUEUE_ORDER is fair, but the run task's backend does not order its queue "
            "by priority: runs are taken first come, first served.",
            hint="Use a task backend that supports priorities (django-tasks-db does), or set "
            "RECOVERY_QUEUE_ORDER=fifo.",
            id="recovery.W001",
        )
    ]


def check_worker_timeout_covers_beats() -> list[CheckMessage]:
    """A worker may miss a beat or two (a slow database); three missed beats mean it is dead."""
    heartbeat = conf.RECOVERY_HEARTBEAT_SECONDS
    timeout = conf.RECOVERY_WORKER_TIMEOUT_SECONDS
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


def check_heartbeat_fits_timeout() -> list[CheckMessage]:
    """A worker that beats less often than the timeout would be failed while alive."""
    heartbeat = conf.RECOVERY_HEARTBEAT_SECONDS
    timeout = conf.STUCK_RUN_TIMEOUT_MINUTES
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
