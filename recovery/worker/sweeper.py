"""The periodic sweep: every RECOVERY_SWEEP_INTERVAL_SECONDS in each server and worker process,
so a dead worker's runs are recovered even when no worker is left. N processes sweeping at once
make one recovery per dead run: sweeps are single-flight in the database."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from django.db import DatabaseError, connections

from ..conf import conf
from .outage import OUTAGES, Outage

logger = logging.getLogger("recovery")


def run_periodic_sweeps(stop: threading.Event) -> None:
    """Sweeps every RECOVERY_SWEEP_INTERVAL_SECONDS until `stop` is set; never raises.

    Quiet unless it recovers something: a worker must not fill its log once a minute.
    """
    from ..models import RecoverySource
    from ..startup import sweeps_enabled
    from ..sweep import recover_stuck_runs

    if not sweeps_enabled():
        return
    interval = conf.RECOVERY_SWEEP_INTERVAL_SECONDS
    outage = Outage("Sweeper")
    while not stop.wait(interval):
        try:
            report = recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
        except OUTAGES as exc:  # a passing database outage must not end the sweeps
            outage.failed(exc)
        except Exception as exc:  # a bug: said once with its traceback, and the sweeps go on
            logger.exception("[Sweeper] Sweep failed: %s: %s", type(exc).__name__, exc)
        else:
            outage.succeeded()
            if report.recovered:
                for line in report.lines():
                    logger.info(line.text)
                logger.info(
                    "[Sweeper] Recovered %d stuck runs%s",
                    report.recovered_count,
                    policy_note(report),
                )
        finally:
            with contextlib.suppress(DatabaseError):
                connections.close_all()


def policy_note(report: Any) -> str:
    """The policy, said when it is not the default (the default's lines stay as they were)."""
    return f" (policy: {report.policy})" if report.policy != "fail" else ""
