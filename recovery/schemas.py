"""The recovery API's schemas: its options (the body of a POST) and its report. ninja builds
the OpenAPI document from them; `recovery.api` reads the options with its own reader (the
rules that JSON Schema cannot state: `force` needs `run_ids`, policies in any case, whole
numbers written as 5.0)."""

from __future__ import annotations

from typing import Annotated

from ninja import Schema
from pydantic import ConfigDict, Field

from common.inputs import MAX_BIGINT
from common.schemas import Answer, Count, Time, any_case

from .conf import MAX_TIMEOUT_MINUTES, POLICIES
from .models import RecoverySource, RunStatus
from .outlook import RECOVERIES, STATES
from .report import SkipReason

#: The recovery API's lists of active and stuck runs stop here (the counts stay exact).
RECOVERY_LIST_LIMIT = 100
#: Most run ids one recovery request may name.
RECOVERY_MAX_RUN_IDS = 1_000

POLICY_PATTERN = any_case(*POLICIES)
TIMEOUT_DESCRIPTION = (
    "Minutes without progress after which a run is stuck; the server's "
    "RECOVERY_TIMEOUT_MINUTES by default."
)
POLICY_DESCRIPTION = (
    f"What to do with dead runs: {' or '.join(POLICIES)} (any case); the server's "
    "RECOVERY_POLICY by default."
)
TimeoutMinutes = Annotated[int, Field(ge=1, le=MAX_TIMEOUT_MINUTES)]
Policy = Annotated[str, Field(pattern=POLICY_PATTERN)]
RunIds = Annotated[
    list[Annotated[int, Field(ge=1, le=MAX_BIGINT)]],
    Field(min_length=1, max_length=RECOVERY_MAX_RUN_IDS, description="Only these runs."),
]


class RecoveryOptions(Schema):
    """All optional: an empty body (or none) recovers with the server's settings."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            # force needs run_ids: name the runs you know are dead.
            "if": {"required": ["force"], "properties": {"force": {"const": True}}},
            "then": {"required": ["run_ids"], "properties": {"run_ids": {"type": "array"}}},
            "examples": [{}, {"run_ids": [42], "force": True, "policy": "resume"}],
        },
    )

    timeout_minutes: TimeoutMinutes | None = Field(
        None, description=TIMEOUT_DESCRIPTION, examples=[30]
    )
    run_ids: RunIds | None = None
    force: bool = Field(
        False, description="Recover the named runs even if they look alive (needs `run_ids`)."
    )
    policy: Policy | None = Field(None, description=POLICY_DESCRIPTION, examples=["resume"])


class RunSnapshot(Answer):
    """A run as a sweep saw it."""

    id: int
    status: RunStatus
    completed: Count
    total: Count
    age_minutes: Count
    heartbeat_at: Time | None
    silent_minutes: Count


class RecoveredRun(Answer):
    """A run the sweep recovered: `previous_status` is the status it had before."""

    id: int
    status: RunStatus
    completed: Count
    total: Count
    age_minutes: Count
    heartbeat_at: Time | None
    silent_minutes: Count
    previous_status: RunStatus
    new_status: RunStatus
    cause: str
    reason: str
    run_id: int = Field(
        description="The run it belongs to: `id` itself, or for a slice of a run worked as "
        "slices, that run (`id`, `completed` and `total` are then the slice's)."
    )
    first_prospect: Count | None = Field(
        description="For a slice: the number of its first prospect in its run; else null."
    )
    last_prospect: Count | None = Field(
        description="For a slice: the number of its last prospect in its run; else null."
    )


class SkippedRun(Answer):
    id: int
    reason: SkipReason


class RecoveryReport(Answer):
    model_config = ConfigDict(
        json_schema_extra={
            "description": f"Lists stop at {RECOVERY_LIST_LIMIT} runs; the counts are exact.",
            "examples": [
                {
                    "timeout_minutes": 30,
                    "dry_run": False,
                    "force": False,
                    "source": "api",
                    "checked_at": "2026-12-07T09:40:00.000000+00:00",
                    "active_count": 1,
                    "stuck_count": 1,
                    "recovered_count": 1,
                    "active": [],
                    "stuck": [
                        {
                            "id": 42,
                            "status": "PROCESSING",
                            "completed": 20,
                            "total": 25,
                            "age_minutes": 40,
                            "heartbeat_at": "2026-12-07T09:05:00.000000+00:00",
                            "silent_minutes": 35,
                        }
                    ],
                    "recovered": [
                        {
                            "id": 42,
                            "status": "PROCESSING",
                            "completed": 20,
                            "total": 25,
                            "age_minutes": 40,
                            "heartbeat_at": "2026-12-07T09:05:00.000000+00:00",
                            "silent_minutes": 35,
                            "previous_status": "PROCESSING",
                            "new_status": "PENDING",
                            "cause": "worker_gone",
                            "reason": "Its worker stopped; it continues with 5 prospects left.",
                            "run_id": 42,
                            "first_prospect": None,
                            "last_prospect": None,
                        }
                    ],
                    "skipped_reason": "",
                    "locked_count": 0,
                    "worker_timeout_seconds": 60,
                    "policy": "resume",
                    "skipped_runs": [],
                }
            ],
        }
    )

    timeout_minutes: int = Field(ge=1)
    dry_run: bool = Field(description="true for GET: nothing changed.")
    force: bool
    source: RecoverySource
    checked_at: Time
    active_count: Count
    stuck_count: Count
    recovered_count: Count
    active: list[RunSnapshot]
    stuck: list[RunSnapshot]
    recovered: list[RecoveredRun]
    skipped_reason: str = Field(
        description="Why the sweep did nothing (another sweep was running), or empty."
    )
    locked_count: Count
    worker_timeout_seconds: Count
    policy: str = Field(json_schema_extra={"enum": list(POLICIES)})
    skipped_runs: list[SkippedRun] = Field(
        description="Runs named in `run_ids` that were left alone, and why."
    )


OUTLOOK_EXAMPLE = {
    "state": "working",
    "summary": "Last activity 1 s ago",
    "text": "Last sign of life 1 s ago (worker web-2:4242, last beat 1 s ago); the sweep runs "
    "every 2 s; if nothing changes it will be recovered within 10 s and resume at prospect 21 "
    "of 25 (20 done).",
    "last_sign_of_life_seconds": 1,
    "worker": "web-2:4242",
    "worker_beat_seconds": 1,
    "sweep_interval_seconds": 2,
    "recover_within_seconds": 10,
    "recovery": "resume",
    "resume_at": 21,
    "remaining": 5,
    "quarantined_prospect": None,
    "deaths": 0,
    "max_deaths": 3,
    "place_in_line": None,
    "workers_alive": None,
    "workers_on_it": 1,
    "slices": None,
}


class SliceCounts(Answer):
    """A run worked as slices: its slices, and how many are in each state now (`dead`: found
    dead, the sweep recovers them)."""

    total: Count
    working: Count
    queued: Count
    done: Count
    failed: Count
    dead: Count


class Outlook(Answer):
    """What happens next to a run, from the liveness module: what is known, when recovery
    would come and what it would do. `text` says it in words; the other fields are its
    figures (null where they do not apply). Built by `recovery.outlook.outlook_of`."""

    model_config = ConfigDict(json_schema_extra={"examples": [OUTLOOK_EXAMPLE]})

    state: str = Field(json_schema_extra={"enum": list(STATES)})
    summary: str = Field(description="One short line (the run's `activity`).")
    text: str
    last_sign_of_life_seconds: Count | None
    worker: str | None = Field(description="The worker executing it, as host:pid.")
    worker_beat_seconds: Count | None
    sweep_interval_seconds: Count | None = Field(
        description="Seconds between sweeps; 0 when periodic sweeps are off."
    )
    recover_within_seconds: Count | None = Field(
        description="At the latest, if no sign of life comes: until the liveness rule finds "
        "it dead, plus one sweep interval."
    )
    recovery: str | None = Field(
        json_schema_extra={"enum": [*RECOVERIES, None]},
        description="What recovery would do with it: resume, fail, quarantine a prospect and "
        "resume, or give up (the crash-loop guard).",
    )
    resume_at: int | None = Field(ge=1, description="The prospect the next attempt starts at.")
    remaining: Count | None
    quarantined_prospect: int | None = Field(ge=1)
    deaths: Count
    max_deaths: Count
    place_in_line: Count | None = Field(
        description="Queued runs ahead of a queued run (0: it is next)."
    )
    workers_alive: bool | None = Field(description="Whether any worker is alive (queued runs).")
    workers_on_it: Count | None = Field(
        None,
        description="Workers working it now: a run worked as slices can have several; a run "
        "worked whole has 1 or 0.",
    )
    slices: SliceCounts | None = Field(
        None, description="For a run worked as slices (one run on many workers); else null."
    )
