"""Every reason a recovered run is given, in one place, written for the run's owner.

The cause's own sentence is computed by the database (its clock, the worker's host) in the
statement that reads the dead runs; what the sweep decided (resume, give up) is put in front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import Case, CharField, F, Value, When
from django.db.models.functions import Cast, Coalesce, Concat

from .clock import SecondsSince
from .models import RecoveryCause, RecoverySource, last_sign_of_life

SOURCE_PHRASES = {
    RecoverySource.STARTUP: "recovered at server start",
    RecoverySource.COMMAND: "recovered by the recover_stuck_runs command",
    RecoverySource.ADMIN: "recovered from the admin",
    RecoverySource.API: "recovered through the recovery API",
    RecoverySource.SWEEPER: "recovered by the periodic sweeper",
    RecoverySource.SHUTDOWN: "handed back when its worker shut down",
    RecoverySource.SUPERVISOR: "noticed by its worker's supervisor",
    RecoverySource.CONTINUE: "continued by its owner",
}


def where(source: str, actor: Any = None) -> str:
    """Who did it, from where: "recovered from the admin by alice"."""
    phrase = SOURCE_PHRASES[RecoverySource(source)]
    if actor is not None and source != RecoverySource.CONTINUE:
        phrase += f" by {actor.get_username()}"
    return phrase


def cause_sentence(source: str, actor: Any) -> Case:
    """The sentence for each cause, computed by the database in the statement that reads the
    dead runs (the `cause` annotation must be present)."""
    tail = Value(f" ({where(source, actor)}).")
    quiet_minutes = Cast(SecondsSince(last_sign_of_life()) / 60, CharField())
    host = Coalesce(F("worker__host"), Value("?"))

    def text(*parts: Any) -> Concat:
        return Concat(*(Value(p) if isinstance(p, str) else p for p in parts), tail)

    return Case(
        When(
            cause=RecoveryCause.NO_TASK,
            then=text("It waited in the queue, but its queued task is no longer there"),
        ),
        When(
            cause=RecoveryCause.WORKER_GONE,
            then=text(
                "Its worker shut down or was removed; last activity ", quiet_minutes, " min ago"
            ),
        ),
        When(
            cause=RecoveryCause.PROCESS_GONE,
            then=text(
                "The worker process on host ",
                host,
                " (pid ",
                Cast(F("worker__pid"), CharField()),
                ") has exited",
            ),
        ),
        When(
            cause=RecoveryCause.WORKER_SILENT,
            then=text(
                "The worker on host ",
                host,
                " stopped responding ",
                Cast(SecondsSince("worker__last_beat_at"), CharField()),
                " s ago and the run made no progress since",
            ),
        ),
        When(
            cause=RecoveryCause.FORCED,
            then=text("Stopped by an operator; last activity ", quiet_minutes, " min ago"),
        ),
        default=text("No progress for ", quiet_minutes, " min; the worker seems stuck on this run"),
        output_field=CharField(),
    )


def next_prospect(completed: int, total: int) -> str:
    """Where an attempt stopped: results are written in input order, so the first prospect
    without a result is number completed + 1 (the worker died on it or on one of the few
    after it, scored in the same unwritten batch)."""
    return f"prospect {min(completed + 1, total)} of {total}"


def gave_up(deaths: int, stopped_at: Sequence[int], total: int) -> str:
    """The crash-loop guard's reason: how many deaths, and where each attempt stopped."""
    points = [f"{min(done + 1, total)}" for done in stopped_at]
    where_ = points[0] if len(set(points)) == 1 else ", ".join(points[:-1]) + " and " + points[-1]
    each = "each time at" if len(set(points)) == 1 and len(points) > 1 else "at"
    return (
        f"Gave up after the worker died {deaths} times on this run; its attempts stopped "
        f"{each} prospect {where_} of {total} (the first without a result). Continue runs "
        "the prospects left once more"
    )


#: The error a quarantined prospect's result carries (the owner sees it with the results).
QUARANTINED_ERROR = "crashed its worker twice; skipped"


def quarantined(prospect: int, total: int) -> str:
    """The quarantine: the prospect that crashed the worker twice is skipped, not the run."""
    return (
        f"Prospect {prospect} of {total} {QUARANTINED_ERROR} (written to the results as "
        "errored); the other prospects go on"
    )


def resumed(completed: int, total: int) -> str:
    return (
        f"Resumed: back in the queue with {completed} of {total} prospects done; the next "
        f"worker starts at {next_prospect(completed, total)}, the first without a result"
    )


def handed_back(completed: int, total: int, source: str) -> str:
    return f"Back in the queue with {completed} of {total} prospects done ({where(source)})."


def continued(completed: int, total: int, source: str, actor: Any) -> str:
    return f"{resumed(completed, total)} ({where(source, actor)})."
