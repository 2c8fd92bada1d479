"""The figures of the recovery overview (an admin page for operators): the same figures as
/metrics, the registered workers, and the last 7 days hour by hour, in a fixed number of
aggregate queries whatever the number of runs and events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, DateTimeField, ExpressionWrapper, F
from django.db.models.functions import TruncHour
from django.utils import timezone

from . import liveness, metrics
from .clock import SecondsSince
from .models import RecoveryCause, RecoveryEvent, RecoverySource, RunStatus, Worker, spoken

#: The charts' window: 7 days of hourly bars, the last one the hour in progress.
WINDOW_HOURS = 7 * 24
#: Workers listed on the page (live first); the worker admin lists them all.
WORKERS_SHOWN = 50
#: The cause of an event without one: a failed run continued by its owner or an operator.
CONTINUED = ""
#: Every cause in the order the charts stack them and the legend lists them.
CAUSES: tuple[str, ...] = (*RecoveryCause.values, CONTINUED)


def cause_label(cause: str) -> str:
    return str(RecoveryCause(cause).label) if cause else "Failed run continued"


@dataclass(frozen=True)
class Hour:
    """One bar of the hourly chart: a local hour and its recoveries by cause."""

    start: dt.datetime  # aware, in the site's time zone
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Day:
    """One row of the per-day table: a local date, its recoveries by cause, from which hour."""

    date: dt.date
    first_hour: dt.datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Bucket:
    """One bar of the histogram: runs that stayed active for (lower, upper] seconds."""

    lower: int | None
    upper: int | None
    count: int

    @property
    def label(self) -> str:
        if self.lower is None:
            return f"≤ {spoken(self.upper or 0)}"
        if self.upper is None:
            return f"> {spoken(self.lower)}"
        lower, upper = spoken(self.lower), spoken(self.upper)
        if lower.endswith(" min") and upper.endswith(" min"):
            lower = lower.removesuffix(" min")
        elif lower.endswith(" s") and upper.endswith(" s"):
            lower = lower.removesuffix(" s")
        return f"{lower}–{upper}"


@dataclass
class Overview:
    """What the overview page shows, read from the database when it is built."""

    now: dt.datetime
    since: dt.datetime
    runs_by_status: dict[str, int]
    dead_runs: int
    queued_runs: int
    oldest_queued_seconds: int | None
    live_workers: int
    dead_workers: int
    workers: list[Worker]
    hours: list[Hour]
    recoveries: dict[tuple[str, str, str], int]
    last_recovery_seconds: int | None
    dead_buckets: list[Bucket]
    dead_count: int
    dead_seconds_sum: float
    by_cause: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        by_cause = dict.fromkeys(CAUSES, 0)
        for (_source, _to, cause), count in self.recoveries.items():
            by_cause[cause if cause in by_cause else CONTINUED] += count
        self.by_cause = {cause: n for cause, n in by_cause.items() if n}

    @property
    def recovered(self) -> int:
        return sum(self.recoveries.values())

    def by_outcome(self) -> dict[str, int]:
        """Recoveries of the window by the status they left the run in (failed or queued)."""
        outcome = dict.fromkeys((RunStatus.FAILED, RunStatus.PENDING), 0)
        for (_source, to_status, _cause), count in self.recoveries.items():
            outcome[to_status] = outcome.get(to_status, 0) + count
        return outcome

    def by_source(self) -> dict[str, int]:
        sources: dict[str, int] = {}
        for (source, _to, _cause), count in self.recoveries.items():
            sources[source] = sources.get(source, 0) + count
        return dict(sorted(sources.items(), key=lambda item: (-item[1], item[0])))

    def days(self) -> list[Day]:
        """The hours grouped by local date, oldest first (the first and last may be partial)."""
        days: dict[dt.date, Day] = {}
        for hour in self.hours:
            date = hour.start.date()
            day = days.setdefault(date, Day(date, hour.start, dict.fromkeys(self.by_cause, 0)))
            for cause, count in hour.counts.items():
                day.counts[cause] = day.counts.get(cause, 0) + count
        return list(days.values())

    def dead_within(self, share: float) -> Bucket | None:
        """The bucket by which `share` of the dead runs had been recovered (None if none)."""
        if not self.dead_count:
            return None
        seen = 0
        for bucket in self.dead_buckets:
            seen += bucket.count
            if seen >= share * self.dead_count:
                return bucket
        return self.dead_buckets[-1]


def hour_starts(now: dt.datetime, tz: dt.tzinfo) -> list[dt.datetime]:
    """The starts of the window's hours, local hours of `tz`, oldest first. Local hours are
    60 minutes apart in absolute time, also across daylight saving changes (an hour repeats
    or is skipped on the clock, not in time), so they are counted in absolute time."""
    current = timezone.localtime(now, tz).replace(minute=0, second=0, microsecond=0)
    first = current.astimezone(dt.UTC) - dt.timedelta(hours=WINDOW_HOURS - 1)
    return [timezone.localtime(first + dt.timedelta(hours=n), tz) for n in range(WINDOW_HOURS)]


def recoveries_per_hour(starts: list[dt.datetime]) -> list[Hour]:
    """Recoveries by cause in each hour of `starts`, grouped by the database.

    The database truncates to UTC hours after shifting by the minutes that the site's hours
    are off UTC's (30 in India, 45 in Nepal), so each group is exactly one local hour; a
    time-zone truncation would merge the hour that repeats when clocks go back.
    """
    first = starts[0]
    shift = dt.timedelta(minutes=first.utcoffset().total_seconds() // 60 % 60)  # type: ignore[union-attr]
    moment: Any = F("created_at")
    if shift:
        moment = ExpressionWrapper(moment + shift, output_field=DateTimeField())
    grouped = (
        RecoveryEvent.objects.order_by()
        .filter(created_at__gte=first)
        .exclude(source=RecoverySource.CONTINUE)  # a Continue is not a recovery
        .annotate(hour=TruncHour(moment, tzinfo=dt.UTC))
        .values_list("hour", "cause")
        .annotate(n=Count("*"))
    )
    counts: list[dict[str, int]] = [{} for _ in starts]
    for hour, cause, count in grouped:
        index = int((hour - shift - first) / dt.timedelta(hours=1))
        # An event stamped by a database clock a little ahead of this host's: the last hour.
        bar = counts[min(max(index, 0), len(starts) - 1)]
        key = cause if cause in CAUSES else CONTINUED
        bar[key] = bar.get(key, 0) + count
    return [Hour(start, bar) for start, bar in zip(starts, counts, strict=True)]


def dead_buckets(since: dt.datetime) -> tuple[list[Bucket], int, float]:
    """The /metrics histogram of the window, as counts per bucket (not cumulative)."""
    cumulative, count, seconds = metrics.dead_seconds_histogram(since)
    buckets, below, lower = [], 0, None
    for upper, upto in cumulative:
        buckets.append(Bucket(lower, upper, upto - below))
        below, lower = upto, upper
    buckets.append(Bucket(lower, None, count - below))
    return buckets, count, seconds


def build(now: dt.datetime | None = None) -> Overview:
    """Everything the page shows: at most eleven aggregate queries and one for the workers."""
    now = now or timezone.now()
    starts = hour_starts(now, timezone.get_current_timezone())
    since = starts[0]
    queued, oldest = metrics.queue_depth()
    live, dead = metrics.worker_counts()
    workers = list(
        liveness.annotate_workers(Worker.objects.all())
        .annotate(beat_seconds=SecondsSince("last_beat_at"))  # the database's clock
        .order_by("-is_alive", "host", "pid")[:WORKERS_SHOWN]
    )
    buckets, dead_count, dead_sum = dead_buckets(since)
    return Overview(
        now=now,
        since=since,
        runs_by_status=metrics.runs_by_status(),
        dead_runs=metrics.rows_dead_runs(),
        queued_runs=queued,
        oldest_queued_seconds=oldest,
        live_workers=live,
        dead_workers=dead,
        workers=workers,
        hours=recoveries_per_hour(starts),
        recoveries=metrics.recovery_counts(since),
        last_recovery_seconds=metrics.event_figures().last_recovery_seconds,
        dead_buckets=buckets,
        dead_count=dead_count,
        dead_seconds_sum=dead_sum,
    )
