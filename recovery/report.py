"""What a sweep saw and did, and its presentations: log lines, the command's listing, JSON.

The sweep (`recovery.sweep`) fills a `RecoveryReport` with facts; every caller turns them
into its own words from here, never by matching on a message.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .conf import POLICY_FAIL, POLICY_RESUME
from .models import RunStatus

#: How many runs a log listing shows before it ends with "... and N more".
DEFAULT_LIST_LIMIT = 20


class SkipReason(StrEnum):
    """Why a sweep left a run its caller named alone, decided when the sweep looked."""

    #: Still showing signs of life: not dead by the rule, and not forced.
    ALIVE = "alive"
    #: Queued, with a live task behind it (waiting in the queue or claimed by a live worker).
    WAITING = "waiting"
    #: Already COMPLETED or FAILED.
    FINISHED = "finished"
    #: Dead when the sweep looked, but its locking statement did not take it: another
    #: transaction held the row (a heartbeat being written, another sweep) or changed it.
    LOCKED = "locked"


class LineKind(StrEnum):
    """What a report line says, so a printer can choose a style without reading the words."""

    INFO = "info"
    #: Dead runs were found (or would be recovered in a dry run).
    WARNING = "warning"
    #: Runs were recovered.
    SUCCESS = "success"


@dataclass(frozen=True, slots=True)
class Line:
    kind: LineKind
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)  # not frozen: a sweep builds one per recovered run, and frozen
class RunSnapshot:  # dataclasses pay an object.__setattr__ per field for it
    """An active run as a sweep saw it."""

    id: int
    status: str
    completed: int
    total: int
    created_at: dt.datetime
    heartbeat_at: dt.datetime | None
    last_seen: dt.datetime

    def age_minutes(self, now: dt.datetime) -> int:
        return _whole_minutes(now - self.created_at)

    def silent_minutes(self, now: dt.datetime) -> int:
        return _whole_minutes(now - self.last_seen)

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "completed": self.completed,
            "total": self.total,
            "age_minutes": self.age_minutes(now),
            "heartbeat_at": self.heartbeat_at.isoformat() if self.heartbeat_at else None,
            "silent_minutes": self.silent_minutes(now),
        }

    def listing_line(self, now: dt.datetime) -> str:
        beat = (
            f"last heartbeat {_whole_minutes(now - self.heartbeat_at)}min ago"
            if self.heartbeat_at
            else "no heartbeat yet"
        )
        return (
            f"  - {self.id}: {self.status}, {self.completed}/{self.total}, "
            f"age: {self.age_minutes(now)}min, {beat}"
        )


@dataclass(slots=True)
class RecoveredRun(RunSnapshot):
    """A run a sweep recovered; `status` is the status it had before."""

    reason: str = ""
    cause: str = ""
    new_status: str = RunStatus.FAILED
    #: The prospect (number in input order, from 1) skipped because it crashed the worker twice.
    quarantined: int | None = None
    #: For a slice of a run worked as slices: its run, and its prospects' numbers. `id`,
    #: `completed`, `total` and `quarantined` are then the slice's own (counted from 1).
    parent_id: int | None = None
    first_number: int | None = None
    last_number: int | None = None

    @property
    def run_id(self) -> int:
        """The run a user knows."""
        return self.parent_id or self.id

    @property
    def slice_label(self) -> str:
        """ "prospects 101–200" for a slice, else "" """
        if self.parent_id is None:
            return ""
        return f"prospects {self.first_number:,}–{self.last_number:,}"

    @property
    def quarantined_number(self) -> int | None:
        """The quarantined prospect's number in its run (as the results number it)."""
        if self.quarantined is None or self.first_number is None:
            return self.quarantined
        return self.first_number - 1 + self.quarantined

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            **RunSnapshot.as_dict(self, now),  # slots dataclasses lose zero-argument super()
            "previous_status": self.status,
            "new_status": str(self.new_status),
            "cause": self.cause,
            "reason": self.reason,
            "run_id": self.run_id,
            "first_prospect": self.first_number,
            "last_prospect": self.last_number,
        }

    def recovered_line(self) -> str:
        name = f"{self.run_id} ({self.slice_label})" if self.parent_id else str(self.id)
        return (
            f"  - Run {name}: {self.completed}/{self.total} completed "
            f"(status: {self.status} → {self.new_status}; {self.cause.replace('_', ' ')})"
        )


@dataclass
class RecoveryReport:
    """What a sweep saw and did; the command prints it, the API returns it."""

    timeout_minutes: int
    source: str
    dry_run: bool
    force: bool
    now: dt.datetime
    worker_timeout_seconds: int = 0
    active_count: int = 0
    active: list[RunSnapshot] = field(default_factory=list)
    stuck_count: int = 0
    stuck: list[RunSnapshot] = field(default_factory=list)
    recovered: list[RecoveredRun] = field(default_factory=list)
    skipped_reason: str = ""
    #: Dead runs another transaction held locked: left for the next sweep.
    locked_count: int = 0
    #: Rows of dead workers removed.
    workers_removed: int = 0
    #: For each run the caller named and the sweep left alone, why.
    skipped: dict[int, SkipReason] = field(default_factory=dict)
    #: What was done with dead runs: "fail" them, or "resume" them (back to the queue).
    policy: str = POLICY_FAIL

    @property
    def recovered_count(self) -> int:
        return len(self.recovered)

    @property
    def rule(self) -> str:
        if self.force:
            return "named by the operator, forced"
        return (
            f"worker gone, exited or silent for {self.worker_timeout_seconds}+ s, "
            f"no progress for {self.timeout_minutes}+ minutes, or queued without a live task"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "timeout_minutes": self.timeout_minutes,
            "dry_run": self.dry_run,
            "force": self.force,
            "source": self.source,
            "checked_at": self.now.isoformat(),
            "active_count": self.active_count,
            "stuck_count": self.stuck_count,
            "recovered_count": self.recovered_count,
            "active": [run.as_dict(self.now) for run in self.active],
            "stuck": [run.as_dict(self.now) for run in self.stuck],
            "recovered": [run.as_dict(self.now) for run in self.recovered],
            "skipped_reason": self.skipped_reason,
            "locked_count": self.locked_count,
            "worker_timeout_seconds": self.worker_timeout_seconds,
            "policy": self.policy,
            "skipped_runs": [
                {"id": run_id, "reason": str(reason)} for run_id, reason in self.skipped.items()
            ],
        }

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def lines(self, list_limit: int | None = DEFAULT_LIST_LIMIT) -> list[Line]:
        """The log lines, each with its kind, listings bounded by
        `list_limit`."""
        info, warning = LineKind.INFO, LineKind.WARNING
        if self.skipped_reason:  # it read nothing: another process was sweeping
            return [Line(info, f"[Recovery] Skipped: {self.skipped_reason}")]
        lines = [Line(info, f"[Recovery] Found {self.active_count} active run(s) in database:")]
        lines += _bounded(
            [run.listing_line(self.now) for run in self.active], self.active_count, list_limit
        )
        rule = self.rule
        if not self.stuck_count:
            lines.append(Line(info, f"[Recovery] No stuck runs found ({rule})"))
            return lines
        lines.append(Line(warning, f"[Recovery] Found {self.stuck_count} stuck runs ({rule})"))
        if self.dry_run:
            lines += _bounded(
                [run.listing_line(self.now) for run in self.stuck], self.stuck_count, list_limit
            )
            would = "resume" if self.policy == POLICY_RESUME else "mark"
            target = "" if self.policy == POLICY_RESUME else " as FAILED"
            lines.append(
                Line(
                    warning,
                    f"[Recovery] Would {would} {self.stuck_count} runs{target} "
                    "(dry run: nothing changed)",
                )
            )
            return lines
        if self.policy == POLICY_RESUME:
            resumed = sum(run.new_status == RunStatus.PENDING for run in self.recovered)
            lines.append(
                Line(
                    LineKind.SUCCESS,
                    f"[Recovery] Resumed {resumed} runs (back in the queue), marked "
                    f"{self.recovered_count - resumed} as FAILED",
                )
            )
        else:
            lines.append(
                Line(LineKind.SUCCESS, f"[Recovery] Marked {self.recovered_count} runs as FAILED")
            )
        lines += _bounded(
            [run.recovered_line() for run in self.recovered], self.recovered_count, list_limit
        )
        if self.locked_count:
            lines.append(
                Line(
                    info,
                    f"[Recovery] Skipped {self.locked_count} runs held locked by another "
                    "transaction (the next sweep retries them)",
                )
            )
        return lines


def _bounded(lines: list[str], total: int, limit: int | None) -> list[Line]:
    shown = lines if limit is None else lines[:limit]
    if total > len(shown):
        shown = [*shown, f"  ... and {total - len(shown)} more"]
    return [Line(LineKind.INFO, text) for text in shown]


def _whole_minutes(delta: dt.timedelta) -> int:
    return max(0, math.floor(delta.total_seconds() / 60))
