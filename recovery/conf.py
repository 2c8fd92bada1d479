"""The recovery app's settings, read as plain attributes (`conf.RECOVERY_POLICY`) so that
`override_settings` works; their defaults, and the bounds and choices the rest of the app
shares with them.

settings.py types them from the environment; recovery/checks.py judges values set in Python
and the relations between them.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Any

from django.conf import settings

from common.values import parse_bounded

DEFAULTS: dict[str, Any] = {
    "STUCK_RUN_TIMEOUT_MINUTES": 5,
    "RECOVERY_ON_STARTUP": True,
    "RECOVERY_HEARTBEAT_SECONDS": 2,
    "RECOVERY_WORKER_TIMEOUT_SECONDS": 8,
    "RECOVERY_SWEEP_INTERVAL_SECONDS": 2,
    "RECOVERY_SHUTDOWN_GRACE_SECONDS": 10,
    "RECOVERY_MAX_ATTEMPTS": 3,
    "RECOVERY_RUN_TASK": "qualifier.tasks.execute_run",
    "RECOVERY_HOSTNAME": "",
    "RECOVERY_POLICY": "fail",
    "RECOVERY_QUEUE_ORDER": "fair",
    "RECOVERY_SLICE_SIZE": 100,
    "METRICS_TOKEN": "",
    "METRICS_ALLOWED_NETWORKS": (),
    "RECOVERY_EVENT_RETENTION_DAYS": 365,
}

#: Ten years: a longer timeout would reach before year 1 and overflow a date.
MAX_TIMEOUT_MINUTES = 10 * 365 * 24 * 60
#: The largest slice: as many prospects as the largest run may have.
MAX_SLICE_SIZE = 1_000_000
#: A hundred years: retention is counted in days, and a longer one is "forever".
MAX_RETENTION_DAYS = 36_500


def parse_timeout_minutes(value: Any) -> int:
    """Minutes of silence after which a run is stuck: 1 to ten years' worth."""
    return parse_bounded(value, minimum=1, maximum=MAX_TIMEOUT_MINUTES)


#: What a sweep does with a dead run: fail it, or put it back in the queue so the next worker
#: continues it.
POLICY_FAIL = "fail"
POLICY_RESUME = "resume"
POLICIES = (POLICY_FAIL, POLICY_RESUME)

#: The order workers take queued runs in: round robin across their owners, or first come,
#: first served (`recovery.queue.queue_priorities` says how).
QUEUE_FAIR = "fair"
QUEUE_FIFO = "fifo"
QUEUE_ORDERS = (QUEUE_FAIR, QUEUE_FIFO)


def _get(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class RecoverySettings:
    @property
    def STUCK_RUN_TIMEOUT_MINUTES(self) -> int:
        """Minutes without progress after which a processing run is hung."""
        return _get("STUCK_RUN_TIMEOUT_MINUTES")

    @property
    def RECOVERY_ON_STARTUP(self) -> bool:
        return _get("RECOVERY_ON_STARTUP")

    @property
    def RECOVERY_HEARTBEAT_SECONDS(self) -> int:
        return _get("RECOVERY_HEARTBEAT_SECONDS")

    @property
    def RECOVERY_WORKER_TIMEOUT_SECONDS(self) -> int:
        """A worker that has not beaten for this long is dead, and so are its runs."""
        return _get("RECOVERY_WORKER_TIMEOUT_SECONDS")

    @property
    def RECOVERY_SWEEP_INTERVAL_SECONDS(self) -> int:
        """Seconds between periodic sweeps in each server and worker; 0 turns them off."""
        return _get("RECOVERY_SWEEP_INTERVAL_SECONDS")

    @property
    def RECOVERY_SHUTDOWN_GRACE_SECONDS(self) -> int:
        """How long a stopping worker may take to finish its batch before it is cut off."""
        return _get("RECOVERY_SHUTDOWN_GRACE_SECONDS")

    @property
    def RECOVERY_MAX_ATTEMPTS(self) -> int:
        """A run whose worker died this many times is failed instead of handed back again."""
        return _get("RECOVERY_MAX_ATTEMPTS")

    @property
    def RECOVERY_HOSTNAME(self) -> str:
        """The host name workers register under; empty means the machine's own. A worker's
        process is checked locally only by processes that register under the same name."""
        return _get("RECOVERY_HOSTNAME")

    @property
    def RECOVERY_RUN_TASK(self) -> str:
        """The django.tasks task that executes a run, called with the run's id."""
        return _get("RECOVERY_RUN_TASK")

    @property
    def RECOVERY_POLICY(self) -> str:
        """`fail` a dead run (keeping its results), or `resume` it: back to the queue."""
        return _get("RECOVERY_POLICY")

    @property
    def RECOVERY_QUEUE_ORDER(self) -> str:
        """`fair`: queued runs are taken round robin across their owners; `fifo`: in the
        order they were queued."""
        return _get("RECOVERY_QUEUE_ORDER")

    @property
    def RECOVERY_SLICE_SIZE(self) -> int:
        """A run of more prospects than this is worked as slices of about this many, each a
        task of its own, so several workers work it at once."""
        return _get("RECOVERY_SLICE_SIZE")

    @property
    def METRICS_TOKEN(self) -> str:
        """The bearer token that may read /metrics; "" for none."""
        return _get("METRICS_TOKEN")

    @property
    def METRICS_ALLOWED_NETWORKS(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """Client networks that may read /metrics without a token; empty for none."""
        return _get("METRICS_ALLOWED_NETWORKS")

    @property
    def RECOVERY_EVENT_RETENTION_DAYS(self) -> int:
        """Recovery events (the audit trail) older than this are deleted by `prune_runs`."""
        return _get("RECOVERY_EVENT_RETENTION_DAYS")


conf = RecoverySettings()
