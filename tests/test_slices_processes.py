"""One run on three real `manage.py db_worker` processes, one of them SIGKILLed mid-run under
`resume`: its slice alone is recovered (by the other workers' sweeps, which see its process
gone on this host), the other workers' slices are not touched, and the run completes with one
result per prospect."""

from __future__ import annotations

import pytest

from tests.test_core_defects_processes import events, executor_of, freeze, thaw, worker_rows
from tests.test_core_defects_processes import fleet as fleet
from tests.test_resume_processes import results_per_prospect
from tests.test_worker_processes import kill_worker, run_state, shell, sql, start_worker, wait_until

pytestmark = pytest.mark.slow(seconds=25)

SETTINGS = {
    "RECOVERY_POLICY": "resume",
    "QUALIFIER_SCORING_DELAY_MS": "100",
    "RECOVERY_SWEEP_INTERVAL_SECONDS": "1",
}


def create_sliced_run(url: str, count: int, size: int) -> int:
    out = shell(
        url,
        "from django.test import override_settings\n"
        "from qualifier.prospects import ProspectData\n"
        "from qualifier.runs import create_run\n"
        f"data = [ProspectData(name=f'P{{i}}', company='C', industry='Software', "
        f"employees=100, title='VP', position=i + 2) for i in range({count})]\n"
        f"with override_settings(RECOVERY_SLICE_SIZE={size}):\n"
        "    print('RUN', create_run(user=None, prospects=data).pk)\n",
    )
    return int(out.split("RUN", 1)[1].split()[0])


def slices_in_hand(url: str, run_id: int) -> dict[int, int]:
    """{worker id: slice id} of the run's slices being worked now."""
    rows = sql(
        url,
        "SELECT worker_id, id FROM recovery_qualificationrun "
        "WHERE parent_id = %s AND status = 'PROCESSING' AND worker_id IS NOT NULL",
        (run_id,),
    )
    return dict(rows)


def test_sigkill_one_of_three_workers_on_one_run_recovers_its_slice_only(
    process_database, tmp_path
):
    url, total = process_database, 360
    run_id = create_sliced_run(url, total, size=20)  # 18 slices of 20, 2 s each
    workers = [start_worker(url, tmp_path / f"worker-{n}.log", **SETTINGS) for n in range(3)]
    try:
        wait_until(lambda: len(slices_in_hand(url, run_id)) == 3, "three workers on it", workers[0])
        victim = workers[0]
        [(victim_row,)] = sql(
            url, "SELECT id FROM recovery_worker WHERE pid = %s", (victim.popen.pid,)
        )
        # Kill it once it has written a batch of its slice, so the slice has results to keep,
        # while every worker holds a slice (a batch a second, a slice in 2 s).
        seen: list[dict[int, int]] = []

        def victim_has_results() -> bool:
            held = slices_in_hand(url, run_id)
            mid_slice = sql(
                url,
                "SELECT COUNT(*) FROM recovery_qualificationrun WHERE worker_id = %s "
                "AND parent_id = %s AND status = 'PROCESSING' AND completed > 0",
                (victim_row, run_id),
            ) == [(1,)]
            seen[:] = [held]
            return len(held) == 3 and mid_slice and victim_row in held

        wait_until(victim_has_results, "the victim's first batch, three workers on it", victim)
        [held] = seen
        lost = held[victim_row]
        others = {worker: part for worker, part in held.items() if worker != victim_row}
        kill_worker(victim)
        # Its slice as it was left (the snapshot above is a few milliseconds older).
        lost = slices_in_hand(url, run_id).get(victim_row, lost)
        wait_until(lambda: run_state(url, run_id)[0] == "COMPLETED", "completion", workers[1], 90)
    finally:
        outputs = [worker.stop() for worker in workers]
    assert run_state(url, run_id) == ("COMPLETED", total, total), outputs[1]
    assert results_per_prospect(url, run_id) == (total, total, total)
    events = sql(
        url,
        "SELECT slice_id, cause, to_status, first_prospect, last_prospect "
        "FROM recovery_recoveryevent WHERE run_id = %s",
        (run_id,),
    )
    assert len(events) == 1, events
    [(slice_id, cause, to_status, first, last)] = events
    assert (slice_id, to_status) == (lost, "PENDING")
    assert cause in ("process_gone", "worker_gone")
    assert last - first + 1 == 20
    # The other workers' slices were not touched: one attempt each, no death, no refused write.
    touched = sql(
        url,
        "SELECT id, attempts, deaths FROM recovery_qualificationrun WHERE id IN (%s, %s)",
        tuple(others.values()),
    )
    assert sorted(touched) == sorted((part, 1, 0) for part in others.values())
    assert sql(url, "SELECT COUNT(*) FROM recovery_fencedwrite") == [(0,)]


@pytest.mark.slow(seconds=30)
def test_a_frozen_worker_on_a_shared_run_loses_its_slice_only_and_writes_nothing_to_it(fleet):
    """SIGSTOP of one of two workers on one run past the worker timeout: the other worker's
    sweep resumes the frozen worker's slice and takes it. Woken (SIGCONT), the frozen worker's
    batch is refused by the slice's fence, and it registers again and takes other slices; the
    run completes with one result per prospect, and the live worker's slices were never
    recovered."""
    url, total = fleet.url, 240
    run_id = create_sliced_run(url, total, size=20)  # 12 slices, 2 s each at 100 ms
    frozen = fleet.start("frozen", RECOVERY_POLICY="resume", QUALIFIER_SCORING_DELAY_MS="100")
    fleet.start("live", RECOVERY_POLICY="resume", QUALIFIER_SCORING_DELAY_MS="100")
    executor_of(fleet, frozen)
    [(frozen_row, _)] = worker_rows(url, frozen.popen.pid)

    def frozen_slice_with_results() -> list[tuple[int]]:
        return sql(
            url,
            "SELECT id FROM recovery_qualificationrun WHERE worker_id = %s AND parent_id = %s "
            "AND status = 'PROCESSING' AND completed > 0",
            (frozen_row, run_id),
        )

    fleet.wait(lambda: bool(frozen_slice_with_results()), "the frozen worker's first batch")
    pids = fleet.remember(frozen)
    freeze(url, pids)
    try:
        [(lost,)] = frozen_slice_with_results()
        fleet.wait(
            lambda: bool(events(url, run_id)), "the live worker's sweep to recover the slice", 30
        )
    finally:
        thaw(pids)
    fleet.wait(lambda: run_state(url, run_id)[0] == "COMPLETED", "completion", 90)
    assert run_state(url, run_id) == ("COMPLETED", total, total)
    assert results_per_prospect(url, run_id) == (total, total, total)
    recovered = sql(
        url,
        "SELECT slice_id, cause, to_status FROM recovery_recoveryevent WHERE run_id = %s",
        (run_id,),
    )
    assert recovered == [(lost, "worker_silent", "PENDING")], fleet.outputs()
    # Woken, its next write to the lost slice (a batch, or the completion) was refused.
    refused = sql(url, "SELECT run_id, kind FROM recovery_fencedwrite")
    assert len(refused) == 1 and refused[0] in {(lost, "progress"), (lost, "complete")}, refused
    assert frozen.popen.poll() is None, fleet.outputs()
