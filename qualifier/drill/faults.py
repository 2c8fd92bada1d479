"""The faults the drill does to its own workers, one trial each, and what a trial measures.

A *false recovery* is a recovery of a run whose worker was still making progress or beating:
any recovery of the bystander run (a healthy worker executes it throughout every fault), any
recovery when only the supervisor was frozen (its executor went on writing progress), and any
recovery of a run beyond the one its fault called for. A worker whose every process is frozen
longer than the worker timeout is, seen from the database, a dead host: recovering its run is
the design, and the drill checks what must hold then (its late writes are refused, no prospect
gets two results, the woken worker goes on taking work).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from recovery.conf import POLICY_FAIL
from recovery.conf import conf as recovery_conf
from recovery.models import FencedWrite, RecoverySource, RunStatus, Worker
from recovery.sweep import continue_failed_runs, recover_stuck_runs

from .drill import Drill, TrialFailed
from .workers import DrillWorker, DrillWorkerError

#: The faults, in the order the drill does them.
SIGTERM = "sigterm"
SIGKILL = "sigkill"
HOST_LOSS = "host-loss"
FREEZE = "freeze"
SUPERVISOR_FREEZE = "supervisor-freeze"
FAULTS = (SIGTERM, SIGKILL, HOST_LOSS, FREEZE, SUPERVISOR_FREEZE)

DESCRIPTIONS = {
    SIGTERM: "SIGTERM to the worker: it hands its run back",
    SIGKILL: "SIGKILL of the worker's processes: found by its pid on this host",
    HOST_LOSS: "SIGKILL of a worker registered on another host: found by its silence",
    FREEZE: "SIGSTOP of every process past the worker timeout, then SIGCONT",
    SUPERVISOR_FREEZE: "SIGSTOP of the supervisor alone past the worker timeout: no recovery",
}


@dataclass
class TrialResult:
    fault: str
    #: Seconds from the fault to the run's recovery (None: none expected, or none came).
    detected_after: float | None = None
    cause: str = ""
    false_recoveries: int = 0
    duplicate_results: int = 0
    wasted_calls: int = 0
    fenced_writes: int = 0
    #: Frozen workers only: whether the woken worker took work again.
    went_on: bool | None = None
    problem: str = ""


@dataclass
class FaultSummary:
    fault: str
    trials: list[TrialResult] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return [t.detected_after for t in self.trials if t.detected_after is not None]

    @property
    def median(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    @property
    def worst(self) -> float | None:
        return max(self.latencies) if self.latencies else None

    @property
    def causes(self) -> str:
        return ", ".join(sorted({t.cause for t in self.trials if t.cause})) or "-"

    def total(self, name: str) -> int:
        return sum(getattr(t, name) for t in self.trials)

    @property
    def problems(self) -> list[str]:
        return [t.problem for t in self.trials if t.problem]


def run_trial(drill: Drill, fault: str) -> TrialResult:
    """One trial of `fault`; a trial that cannot complete says why in `problem`."""
    result = TrialResult(fault)
    try:
        _trial(drill, fault, result)
    except (TrialFailed, DrillWorkerError) as exc:
        result.problem = str(exc)
        drill.keep_logs = True
    return result


def _trial(drill: Drill, fault: str, result: TrialResult) -> None:
    timeouts = drill.timeouts
    bystander = drill.ensure_bystander()
    bystander_recoveries = len(drill.recoveries(bystander))
    victim = drill.start_worker(f"{fault}-{len(drill.workers)}", lost_host=fault == HOST_LOSS)
    helpers: list[DrillWorker] = [victim]
    with drill.stopping(helpers):
        row = victim.registration()
        # Long enough to outlast the fault: a frozen supervisor is held past the timeout.
        hold = timeouts.worker_timeout + 2 * timeouts.sweep_interval + 2
        seconds = hold + 10 if fault == SUPERVISOR_FREEZE else 10
        size = max(50, seconds * 1000 // max(drill.delay_ms, 1))
        run_id, label = drill.submit(fault, size)
        try:
            drill.wait(
                lambda: drill.state(run_id)[1] == row.pk and drill.state(run_id)[2] > 0,
                120,
                "the run's first batch",
            )
            bound = 3 * timeouts.detection_bound + 60  # generous: the machine may be loaded
            recovered = lambda: bool(drill.recoveries(run_id))  # noqa: E731
            fault_at = time.monotonic()
            if fault == SIGTERM:
                victim.terminate()
                result.detected_after = drill.wait(recovered, bound, "the hand-back")
            elif fault in (SIGKILL, HOST_LOSS):
                victim.kill()
                result.detected_after = drill.wait(recovered, bound, "the recovery")
            elif fault == FREEZE:
                frozen = victim.freeze()
                try:
                    result.detected_after = drill.wait(recovered, bound, "the recovery")
                    # Past the timeout whatever found it, so the woken worker is stale.
                    left = timeouts.worker_timeout - (time.monotonic() - fault_at)
                    if left > 0:
                        time.sleep(left)
                finally:
                    victim.thaw(frozen)
            else:
                frozen = victim.freeze(supervisor_only=True)
                try:
                    time.sleep(hold)
                finally:
                    victim.thaw(frozen)
            events = drill.recoveries(run_id)
            expected = 0 if fault == SUPERVISOR_FREEZE else 1
            if events:
                result.cause = events[0].cause
                if fault == SUPERVISOR_FREEZE:
                    result.detected_after = None
            if fault != FREEZE and fault != SUPERVISOR_FREEZE:
                helpers.append(drill.start_worker(f"{fault}-{len(drill.workers)}-successor"))
            if (
                drill.state(run_id)[0] == RunStatus.FAILED
                and recovery_conf.RECOVERY_POLICY == POLICY_FAIL
            ):
                # Under the fail policy the owner continues a failed run: the drill does too.
                continue_failed_runs([run_id], source=RecoverySource.CONTINUE, actor=drill.user)
            drill.wait(
                lambda: drill.state(run_id)[0] == RunStatus.COMPLETED,
                size * drill.delay_ms / 1000 + 120,
                "the run to complete",
            )
            if fault == FREEZE:
                result.went_on = (
                    victim.popen.poll() is None
                    and Worker.objects.filter(pid=victim.pid, host=row.host).exists()
                )
                if not result.went_on:
                    result.problem = "the woken worker did not go on"
            events = drill.recoveries(run_id)
            result.false_recoveries = max(0, len(events) - expected) + (
                len(drill.recoveries(bystander)) - bystander_recoveries
            )
            result.duplicate_results = drill.duplicate_results(run_id)
            result.wasted_calls = max(0, drill.scorer_calls(label) - size)
            result.fenced_writes = FencedWrite.objects.filter(run_id=run_id).count()
        except BaseException:
            _retire(run_id)
            raise


def _retire(run_id: int) -> None:
    """A trial that went wrong fails its run, so no later worker takes it up."""
    recover_stuck_runs(source=RecoverySource.COMMAND, run_ids=[run_id], force=True, log=False)
