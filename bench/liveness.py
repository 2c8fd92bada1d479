"""How long a dead worker's run stays active, with the default settings, and a soak that counts
false recoveries.

`detect` SIGKILLs a worker (supervisor and executor, as when a machine dies) in the middle of a
run, and times how long until the run has a recovery event, over N trials per scenario:

- same-host: another worker keeps running on the same host (it sweeps every interval and sees
  the dead pid at once);
- restart: the worker is restarted on the same host (its startup sweep, before it takes work);
- other-host: the dead worker was on another host (RECOVERY_HOSTNAME), a worker here sweeps:
  the worker timeout plus up to one sweep interval;
- web-only: the same, but no worker is left, only gunicorn.

`soak` runs for M minutes with a web server sweeping and: a run whose prospects each take longer
than the worker timeout, a worker paused with SIGSTOP for less than the worker timeout every
minute, and 50 queued runs behind one long run; it counts recovery events (there must be none).

    .venv/bin/python bench/liveness.py detect --database-url postgres://postgres@127.0.0.1:5432/qualifier_livebench
    .venv/bin/python bench/liveness.py soak --database-url postgres://postgres@127.0.0.1:5432/qualifier_soak --minutes 10
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from bench.common import (
    create_benchmark_run,
    create_database,
    describe_machine,
    setup_django,
)

PROJECT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LOGS = Path("/tmp/qualifier-liveness-bench")


class Proc:
    def __init__(self, name: str, args: list[str], url: str, **env: str) -> None:
        LOGS.mkdir(exist_ok=True)
        self.log = open(LOGS / f"{name}.log", "a")  # noqa: SIM115
        environment = {
            **os.environ,
            "DATABASE_URL": url,
            "SECRET_KEY": "bench-only-secret-key",
            "DEBUG": "false",
            "PYTHONUNBUFFERED": "1",
            "QUALIFIER_IGNORE_DOTENV": "1",
            "RECOVERY_ON_STARTUP": "true",
            **env,
        }
        self.popen = subprocess.Popen(
            args,
            cwd=PROJECT,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def children(self) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.popen.pid:
                found.append(int(stat.parent.name))
        return found

    def kill(self) -> None:
        executors = self.children()
        os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in executors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def worker(name: str, url: str, *, queue: str = "default", **env: str) -> Proc:
    args = [PYTHON, "manage.py", "db_worker", "--no-reload", "--queue-name", queue]
    return Proc(name, args, url, **env)


def wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def progress(run_id: int) -> int:
    from recovery.models import QualificationRun

    return QualificationRun.objects.values_list("completed", flat=True).get(pk=run_id)


def recovered(run_id: int) -> bool:
    from recovery.models import RecoveryEvent

    return RecoveryEvent.objects.filter(run_id=run_id).exists()


def one_trial(url: str, scenario: str, trial: int) -> float:
    env = {"QUALIFIER_SCORING_DELAY_MS": "200"}
    if scenario in ("other-host", "web-only"):
        env["RECOVERY_HOSTNAME"] = "bench-other-host"
    doomed = worker(f"{scenario}-doomed", url, **env)
    run_id = create_benchmark_run(2000)
    wait(lambda: progress(run_id) >= 3, 60, "the doomed worker's first batches")
    doomed.kill()
    killed = time.monotonic()
    restarted = worker(f"{scenario}-restarted", url) if scenario == "restart" else None
    try:
        wait(lambda: recovered(run_id), 120, f"trial {trial}: the recovery")
    finally:
        if restarted is not None:
            restarted.stop()
    return time.monotonic() - killed


def detect(url: str, trials: int, scenarios: list[str]) -> None:
    from django.conf import settings

    print(describe_machine())
    print(
        "defaults: heartbeat",
        settings.RECOVERY_HEARTBEAT_SECONDS,
        "s, worker timeout",
        settings.RECOVERY_WORKER_TIMEOUT_SECONDS,
        "s, sweep interval",
        settings.RECOVERY_SWEEP_INTERVAL_SECONDS,
        "s",
    )
    for scenario in scenarios:
        helpers: list[Proc] = []
        if scenario in ("same-host", "other-host"):
            helpers.append(worker(f"{scenario}-sweeper", url, queue="bench-nothing"))
        if scenario == "web-only":
            port = 8197
            helpers.append(
                Proc(
                    "gunicorn",
                    [
                        str(Path(PYTHON).parent / "gunicorn"),
                        "-w",
                        "2",
                        "-b",
                        f"127.0.0.1:{port}",
                        "qualifier.wsgi",
                    ],
                    url,
                )
            )
        time.sleep(3)
        try:
            times = [one_trial(url, scenario, n) for n in range(trials)]
        finally:
            for helper in helpers:
                helper.stop()
        print(
            f"{scenario:<11} median {statistics.median(times):5.1f} s  worst {max(times):5.1f} s"
            f"  ({', '.join(f'{t:.1f}' for t in times)})"
        )


def soak(url: str, minutes: float) -> None:
    """Three loads, each on a database of its own with its own worker and web server (the task
    backend accepts only its configured queue), run side by side on one machine."""
    from django.db import connections

    print(describe_machine())
    parts = {
        # 14 prospects of 35 s: each longer than the 30 s worker timeout.
        "slow": ({"QUALIFIER_SCORING_DELAY_MS": "35000"}, [14]),
        # Runs of 600 x 100 ms while the worker is paused with SIGSTOP for 20 s every minute.
        "paused": ({"QUALIFIER_SCORING_DELAY_MS": "100"}, [600] * int(minutes)),
        # One long run (3000 x 100 ms = 5 min) and 50 queued behind it.
        "queue": ({"QUALIFIER_SCORING_DELAY_MS": "100"}, [3000] + [20] * 50),
    }
    urls = {name: f"{url}_{name}" for name in parts}
    procs: dict[str, list[Proc]] = {}
    for port, (name, (env, sizes)) in enumerate(parts.items(), start=8190):
        use_database(urls[name])
        for size in sizes:
            create_benchmark_run(size)
        procs[name] = [
            worker(f"soak-{name}", urls[name], **env),
            Proc(
                f"soak-{name}-web",
                [
                    str(Path(PYTHON).parent / "gunicorn"),
                    "-w",
                    "1",
                    "-b",
                    f"127.0.0.1:{port}",
                    "qualifier.wsgi",
                ],
                urls[name],
            ),
        ]
    connections.close_all()
    started = time.monotonic()
    pauses = 0
    paused = procs["paused"][0]
    try:
        while time.monotonic() - started < minutes * 60:
            time.sleep(20)
            executors = paused.children()
            for pid in [paused.popen.pid, *executors]:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(20)  # less than the 30 s worker timeout
            for pid in [*executors, paused.popen.pid]:
                os.kill(pid, signal.SIGCONT)
            pauses += 1
            time.sleep(20)
    finally:
        elapsed = (time.monotonic() - started) / 60
        for group in procs.values():
            for proc in group:
                proc.stop()
    print(f"soak of {elapsed:.1f} min, a web server sweeping every 10 s beside each worker:")
    for name in parts:
        print(f"  {name}: {summary(urls[name])}")
    print(f"  (the paused worker was stopped {pauses} times for 20 s)")


def use_database(url: str) -> None:
    """Points this process's default connection at another (created, migrated) database."""
    from django.core.management import call_command
    from django.db import connections

    create_database(url)
    connections.close_all()
    from bench.common import parse_database_url

    connections["default"].settings_dict.update(parse_database_url(url))
    call_command("migrate", verbosity=0, interactive=False)
    call_command("flush", interactive=False, verbosity=0)


def summary(url: str) -> str:
    from django.db.models import Count

    from recovery.models import QualificationRun, RecoveryEvent

    use_database_without_reset(url)
    by_status = dict(
        QualificationRun.objects.order_by().values_list("status").annotate(n=Count("pk"))
    )
    recoveries = RecoveryEvent.objects.exclude(source="shutdown").count()
    handed_back = RecoveryEvent.objects.filter(source="shutdown").count()
    return (
        f"runs by status {by_status}, recoveries (false ones): {recoveries}, "
        f"hand-backs when the soak stopped its worker: {handed_back}"
    )


def use_database_without_reset(url: str) -> None:
    from django.db import connections

    from bench.common import parse_database_url

    connections.close_all()
    connections["default"].settings_dict.update(parse_database_url(url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["detect", "soak"])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=["same-host", "restart", "other-host", "web-only"],
    )
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    create_database(args.database_url)
    setup_django(args.database_url)
    from django.core.management import call_command

    call_command("flush", interactive=False, verbosity=0)
    if args.mode == "detect":
        detect(
            args.database_url,
            args.trials,
            args.scenario or ["same-host", "restart", "other-host", "web-only"],
        )
    else:
        soak(args.database_url, args.minutes)


if __name__ == "__main__":
    main()
