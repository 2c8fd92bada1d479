"""What the system knows of a run and what it will do next, in one value for the run's page,
the admin and the API: read from the liveness module's annotations (never judged again here)
and the sweep's own `verdict`, so the pages say what the sweep will do.

`annotate()` adds what a run's outlook reads to a queryset (in its one query, however many
runs); `outlook_of()` turns one annotated run into an `Outlook`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from . import liveness
from .conf import conf
from .models import DEAD_RUN_CAUSES, QualificationRun, RecoveryEvent, RunStatus, spoken
from .queue import task_key

# What a run is doing, as `Outlook.state` says it.
WORKING = "working"  # processing, and its worker shows signs of life
RECOVERING = "recovering"  # found dead: the next sweep recovers it
QUEUED = "queued"  # waiting for a worker, never started
INTERRUPTED = "interrupted"  # back in the queue after an attempt: it continues where it stopped
FAILED = "failed"
COMPLETED = "completed"
STATES = (WORKING, RECOVERING, QUEUED, INTERRUPTED, FAILED, COMPLETED)

# What recovery will do with it, as `Outlook.recovery` says it (the sweep's `verdict`).
RESUME = "resume"  # back to the queue; the next worker starts at `resume_at`
FAIL = "fail"  # failed, results kept; Continue finishes it
QUARANTINE = "quarantine"  # the prospect that crashed its worker twice is skipped, the run resumes
GIVE_UP = "give_up"  # the crash-loop guard fails it
RECOVERIES = (RESUME, FAIL, QUARANTINE, GIVE_UP)


@dataclass(frozen=True)
class Outlook:
    """One run's "what happens next": the state, the words, and the figures behind them."""

    state: str
    #: A short line for lists and progress bars ("Last activity 4 s ago").
    summary: str
    #: The whole story, in sentences: what is known, when recovery comes, what it will do.
    text: str
    last_sign_of_life_seconds: int | None = None
    worker: str | None = None
    worker_beat_seconds: int | None = None
    #: RECOVERY_SWEEP_INTERVAL_SECONDS; 0 when periodic sweeps are off.
    sweep_interval_seconds: int | None = None
    #: At the latest, if no sign of life comes: until the rule finds it dead, plus a sweep.
    recover_within_seconds: int | None = None
    recovery: str | None = None
    #: The prospect (number in input order) the next attempt starts at.
    resume_at: int | None = None
    #: Prospects without a result: what a resume or a Continue would score.
    remaining: int | None = None
    #: The prospect that crashed its worker twice: written as errored, skipped.
    quarantined_prospect: int | None = None
    #: Deaths of its worker on this run since the last Continue or quarantine, and the
    #: number at which the crash-loop guard gives up (RECOVERY_MAX_ATTEMPTS).
    deaths: int = 0
    max_deaths: int = 0
    #: Queued runs ahead of it (0: it is next).
    place_in_line: int | None = None
    #: Whether any worker is alive anywhere (queued runs only).
    workers_alive: bool | None = None
    #: Workers working it now: its slices' workers, or 1 or 0 for a run worked whole.
    workers_on_it: int | None = None
    #: For a run worked as slices: how many, and how many are working, queued, done, failed.
    slices: dict[str, int] | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the query --------------------------------------------------------------------------------


def annotate(runs: QuerySet[QualificationRun]) -> QuerySet[Any]:
    """The runs with liveness's annotations and what the outlook reads besides, all in the
    query's own subqueries: the queued runs ahead of a queued one, its worker's name, and where
    the attempt before a processing one stopped (for the crash-loop guard's verdict)."""
    ahead = (
        QualificationRun.leases.filter(status=RunStatus.PENDING)
        .filter(  # the queue's order: higher priority first, then the oldest
            Q(priority__gt=OuterRef("priority"))
            | Q(priority=OuterRef("priority"), queued_at__lt=OuterRef("queued_at"))
            | Q(
                priority=OuterRef("priority"),
                queued_at=OuterRef("queued_at"),
                pk__lt=OuterRef("pk"),
            )
        )
        .order_by()
        .values("status")
        # Runs, not tasks: a run worked as slices counts once however many it has queued.
        .annotate(count=Count(Coalesce("parent_id", "pk"), distinct=True))
        .values("count")
    )
    slices = QualificationRun.leases.filter(parent=OuterRef("pk"))
    working = QualificationRun.leases.filter(
        Q(pk=OuterRef("pk")) | Q(parent=OuterRef("pk")),
        status=RunStatus.PROCESSING,
        worker__isnull=False,
    )
    parts = {
        "working": slices.filter(status=RunStatus.PROCESSING),
        "queued": slices.filter(status=RunStatus.PENDING),
        "done": slices.filter(status=RunStatus.COMPLETED),
        "failed": slices.filter(status=RunStatus.FAILED),
        "dead": liveness.with_clock(slices)
        .alias(task_key=task_key())
        .filter(liveness.dead(liveness.Rule.current())),
    }
    last_stop = (
        RecoveryEvent.objects.filter(run=OuterRef("pk"), cause__in=DEAD_RUN_CAUSES)
        .order_by("-created_at", "-pk")
        .values("completed")[:1]
    )
    return liveness.annotate_runs(runs).annotate(
        place_in_line=Case(
            When(status=RunStatus.PENDING, then=Coalesce(Subquery(ahead), 0)),
            default=None,
            output_field=IntegerField(),
        ),
        previous_stop=Case(
            When(status=RunStatus.PROCESSING, deaths__gte=1, then=Subquery(last_stop)),
            default=None,
            output_field=IntegerField(),
        ),
        worker_host=F("worker__host"),
        worker_pid=F("worker__pid"),
        workers_on_it=Coalesce(Subquery(_count(working, "worker_id")), 0),
        **{
            f"slices_{name}": Case(
                When(slice_count__gt=0, then=Coalesce(Subquery(_count(part)), 0)),
                default=None,
                output_field=IntegerField(),
            )
            for name, part in parts.items()
        },
    )


def _count(leases: QuerySet[QualificationRun], distinct: str = "pk") -> QuerySet[Any]:
    """How many of `leases` (a subquery): of distinct `distinct` values."""
    return (
        leases.order_by()
        .annotate(one=Value(1))
        .values("one")
        .annotate(count=Count(distinct, distinct=True))
        .values("count")
    )


# --- the words ----------------------------------------------------------------------------------


def _prospects(count: int) -> str:
    return f"{count:,} prospect" + ("" if count == 1 else "s")


def _results(count: int) -> str:
    return f"{count:,} result" + ("" if count == 1 else "s")


def continue_advice(run: QualificationRun) -> str:
    """What the owner of a failed run can do: Continue for the prospects left."""
    left = run.total - run.completed
    if left <= 0:
        return "Every prospect has a result: download the CSV to see them all."
    if run.completed == 1:
        kept = " the result so far is kept."
    elif run.completed:
        kept = f" the {run.completed:,} results so far are kept."
    else:
        kept = " nothing was scored yet."
    return f"Press Continue to finish the remaining {_prospects(left)};{kept}"


def _quarantine_note(run: QualificationRun) -> str:
    if run.skip_prospect is None:
        return ""
    return (
        f"Prospect {run.skip_prospect:,} is quarantined: it crashed its worker twice, so it is "
        "written to the results as errored and the others go on."
    )


def _verdict_words(run: QualificationRun, recovery: str, quarantined: int | None) -> str:
    done = f"({run.completed:,} done)"
    resume_at = min(run.completed + 1, run.total)
    if recovery == RESUME:
        return f"resume at prospect {resume_at:,} of {run.total:,} {done}"
    if recovery == QUARANTINE:
        return (
            f"skip prospect {quarantined:,} (it crashed its worker twice: written as errored) "
            f"and resume at prospect {min(resume_at + 1, run.total):,} of {run.total:,}"
        )
    left = run.total - run.completed
    kept = f"keeping its {_results(run.completed)}; Continue finishes the other {left:,}"
    if recovery == GIVE_UP:
        return (
            f"be failed, {kept}: it would be its worker's death {run.deaths + 1} on this run, "
            f"and the crash-loop guard gives up at {conf.RECOVERY_MAX_ATTEMPTS} "
            "(RECOVERY_MAX_ATTEMPTS)"
        )
    return f"be failed, {kept}"


def _predicted(run: QualificationRun, cause: str) -> tuple[str, int | None]:
    """What the sweep's `verdict` will do with the run if it is recovered as it is now."""
    from .sweep import is_death, verdict

    died = is_death(cause)
    decided = verdict(
        conf.RECOVERY_POLICY,
        died=died,
        deaths=run.deaths + died,
        previous_stop=getattr(run, "previous_stop", None) if run.deaths else None,
        stop=run.completed,
        total=run.total,
    )
    if decided.quarantined is not None:
        return QUARANTINE, decided.quarantined
    if decided.gave_up:
        return GIVE_UP, None
    return (RESUME if decided.status == RunStatus.PENDING else FAIL), None


#: The cause a PROCESSING run would be found dead with if no sign of life came.
SILENT_CAUSE = "worker_silent"

DEAD_WORDS = {
    "worker_gone": "Its worker is gone",
    "worker_silent": "Its worker stopped responding",
    "no_progress": "It made no progress for the stuck timeout, though its worker beats",
    "no_task": "Its queued task is gone",
}


def _processing(run: QualificationRun) -> Outlook:
    dead = getattr(run, "liveness", "") == liveness.DEAD
    cause = getattr(run, "dead_cause", "") or SILENT_CAUSE
    seen = getattr(run, "activity_seconds", None)
    beat = getattr(run, "worker_beat_seconds", None)
    host = getattr(run, "worker_host", None)
    worker = f"{host}:{getattr(run, 'worker_pid', '')}" if host else None
    interval = conf.RECOVERY_SWEEP_INTERVAL_SECONDS
    dead_in = getattr(run, "dead_in_seconds", None)
    within = None if dead_in is None or not interval else dead_in + interval
    recovery, quarantined = _predicted(run, cause)
    resume_at = min(run.completed + 1, run.total)

    about = (
        f"worker {worker}, last beat {spoken(beat or 0)} ago" if worker else "its worker is gone"
    )
    known = f"Last sign of life {spoken(seen or 0)} ago ({about})."
    then = _verdict_words(run, recovery, quarantined)
    if not interval:
        when = (
            "Periodic sweeps are off (RECOVERY_SWEEP_INTERVAL_SECONDS is 0): it is recovered at "
            "the next server start or recover_stuck_runs, and will then "
        )
        if not dead:
            when = (
                f"If no further sign of life comes, it is found dead in {spoken(dead_in or 0)}. "
                + when
            )
    elif dead:
        when = (
            f"{DEAD_WORDS.get(cause, 'Its worker stopped responding')}: the sweep runs every "
            f"{interval} s and will recover it within {spoken(within or 0)} unless a sign of "
            "life comes first, and will then "
        )
    else:
        when = (
            f"The sweep runs every {interval} s: if no further sign of life comes, this run "
            f"will be recovered within {spoken(within or 0)} and will then "
        )
    text = " ".join(part for part in (known, when + then + ".", _quarantine_note(run)) if part)
    if dead:
        summary = "The worker stopped responding; recovering…"
    else:
        summary = "Working" if seen is None else f"Last activity {spoken(seen)} ago"
    return Outlook(
        state=RECOVERING if dead else WORKING,
        summary=summary,
        text=text,
        last_sign_of_life_seconds=seen,
        worker=worker,
        worker_beat_seconds=beat if worker else None,
        sweep_interval_seconds=interval,
        recover_within_seconds=within,
        recovery=recovery,
        resume_at=None
        if recovery in (FAIL, GIVE_UP)
        else min(resume_at + (recovery == QUARANTINE), run.total),
        remaining=run.total - run.completed,
        quarantined_prospect=run.skip_prospect,
        deaths=run.deaths,
        max_deaths=conf.RECOVERY_MAX_ATTEMPTS,
    )


def _pending(run: QualificationRun) -> Outlook:
    waited = getattr(run, "queued_seconds", None)
    ahead = getattr(run, "place_in_line", None)
    workers = getattr(run, "worker_alive_anywhere", None)  # None: not annotated, unknown
    resume_at = min(run.completed + 1, run.total)
    common = {
        "remaining": run.total - run.completed,
        "resume_at": resume_at,
        "quarantined_prospect": run.skip_prospect,
        "deaths": run.deaths,
        "max_deaths": conf.RECOVERY_MAX_ATTEMPTS,
        "place_in_line": ahead,
        "workers_alive": workers,
        "sweep_interval_seconds": conf.RECOVERY_SWEEP_INTERVAL_SECONDS,
    }
    if getattr(run, "liveness", "") == liveness.DEAD:
        interval = conf.RECOVERY_SWEEP_INTERVAL_SECONDS
        recovery, _ = _predicted(run, "no_task")
        then = (
            "put it back in the queue with a new task"
            if recovery == RESUME
            else (
                "fail it"
                + (f", keeping its {_results(run.completed)}" if run.completed else "")
                + "; Continue finishes it"
            )
        )
        when = f"within {spoken(interval)}" if interval else "at the next server start"
        return Outlook(
            state=RECOVERING,
            summary="Its queued task is gone; recovering…",
            text=f"Its queued task is gone: the sweep will {then} {when}.",
            recover_within_seconds=interval or None,
            recovery=recovery,
            **common,
        )
    queued = f" (queued for {spoken(waited)})" if waited is not None else ""
    if ahead is None:
        line = ""
    elif ahead:
        line = f"{ahead:,} queued run{'' if ahead == 1 else 's'} ahead of it"
    else:
        line = "It is next in line"
    if workers is False:
        summary = "No worker is running: the run starts when one does"
        start = f"{line}. " if line else ""
        start += "No worker is running: the run starts when one does."
    else:
        start = f"{line}; it starts when a worker is free." if line else ""
    if run.started_at is not None:  # handed back, resumed or continued
        if workers is not False:
            summary = (
                f"Interrupted at {run.completed} of {run.total}; it continues where it "
                f"stopped when a worker takes it{queued}"
            )
        first = (
            f"Interrupted at {run.completed:,} of {run.total:,}: it will continue at prospect "
            f"{resume_at:,}, the first without a result, and keep its "
            f"{_results(run.completed)}."
        )
        state = INTERRUPTED
    else:
        if workers is not False:
            summary = "Queued, waiting for a worker" + (
                f" (for {spoken(waited)})" if waited is not None else ""
            )
        since = f" for {spoken(waited)}" if waited is not None else ""
        first = f"Queued{since}: {_prospects(run.total)} to score."
        state = QUEUED
    text = " ".join(part for part in (first, start, _quarantine_note(run)) if part)
    return Outlook(state=state, summary=summary, text=text, **common)


def _sliced(run: QualificationRun) -> Outlook:
    """An active run worked as slices: who is on it, and what happens if a worker dies."""
    counts = {
        name: getattr(run, f"slices_{name}", None) or 0
        for name in ("working", "queued", "done", "failed", "dead")
    }
    workers = getattr(run, "workers_on_it", None) or 0
    interval = conf.RECOVERY_SWEEP_INTERVAL_SECONDS
    size = -(-run.total // run.slice_count)
    progress = f"{run.completed:,} of {run.total:,} prospects done"
    known = (
        f"Worked as {run.slice_count:,} slices of about {_prospects(size)}, each a task any "
        f"worker can take: {workers:,} worker{'' if workers == 1 else 's'} on it now; "
        f"{counts['done']:,} slices done, {counts['queued']:,} queued"
        + (f", {counts['failed']:,} failed" if counts["failed"] else "")
        + f"; {progress}."
    )
    resumes = conf.RECOVERY_POLICY == "resume"
    then = (
        "goes back to the queue and continues where it stopped"
        if resumes
        else "is failed, keeping its results (Continue finishes it)"
    )
    recovery = (
        f"If a worker stops responding, only its slice is recovered: it {then}; the other "
        "workers go on."
    )
    if counts["dead"]:
        recovery = (
            f"{counts['dead']:,} of its slices lost their worker: the sweep recovers them "
            + (f"within {interval} s" if interval else "at the next server start")
            + f" (each {then}); the other workers go on."
        )
    if counts["failed"]:
        recovery += (
            " The run fails once its other slices have finished; Continue then finishes "
            "the failed slices' prospects."
        )
    if workers:
        state, summary = WORKING, f"{workers:,} worker{'' if workers == 1 else 's'} on it"
    elif run.started_at is not None:
        state, summary = INTERRUPTED, f"Waiting for a worker at {run.completed} of {run.total}"
    else:
        state, summary = QUEUED, "Queued, waiting for a worker"
    if counts["dead"]:
        state, summary = RECOVERING, "A worker stopped responding; recovering its slice…"
    return Outlook(
        state=state,
        summary=summary,
        text=f"{known} {recovery}",
        sweep_interval_seconds=interval,
        recovery=RESUME if resumes else FAIL,
        remaining=run.total - run.completed,
        max_deaths=conf.RECOVERY_MAX_ATTEMPTS,
        place_in_line=getattr(run, "place_in_line", None) if not workers else None,
        workers_alive=getattr(run, "worker_alive_anywhere", None),
        workers_on_it=workers,
        slices={"total": run.slice_count, **counts},
    )


def outlook_of(run: QualificationRun) -> Outlook:
    """What happens next to `run` (annotated by `annotate()`; without it, a finished run's
    outlook is still right, and an active one's lacks the figures)."""
    if run.slice_count and run.status in (RunStatus.PROCESSING, RunStatus.PENDING):
        return _sliced(run)
    if run.status == RunStatus.PROCESSING:
        return _processing(run)
    if run.status == RunStatus.PENDING:
        return _pending(run)
    if run.status == RunStatus.FAILED:
        left = run.total - run.completed
        return Outlook(
            state=FAILED,
            summary="",
            text=continue_advice(run),
            remaining=left,
            resume_at=run.completed + 1 if left > 0 else None,
            quarantined_prospect=run.skip_prospect,
            deaths=run.deaths,
            max_deaths=conf.RECOVERY_MAX_ATTEMPTS,
        )
    return Outlook(
        state=COMPLETED,
        summary="",
        text="Completed: nothing more will happen to this run.",
        remaining=0,
    )


__all__ = ["RECOVERIES", "STATES", "Outlook", "annotate", "continue_advice", "outlook_of"]
