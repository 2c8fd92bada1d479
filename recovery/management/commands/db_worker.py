"""`manage.py db_worker`: django-tasks-db's worker, supervised so that no run is left stuck.

It extends django-tasks-db's command the way `django.contrib.staticfiles` extends `runserver`
(the recovery app is listed before django_tasks_db, so this one is found first). Every option
of django-tasks-db's works. What it adds lives in `recovery.worker`: the process registers as a
worker and beats on the database's clock, recovers dead runs at its start before it takes any
work and then every RECOVERY_SWEEP_INTERVAL_SECONDS, and runs the queue in an executor child
process, so neither a scorer that holds the GIL nor one that crashes its process can make a
live run look dead or leave one stuck. SIGTERM or Ctrl-C hands the run in progress back to the
queue; a database outage is waited out.
"""

from __future__ import annotations

from argparse import SUPPRESS, ArgumentParser
from typing import Any

from django_tasks_db.management.commands.db_worker import Command as QueueWorkerCommand

from recovery.worker import executor, supervisor


class Command(QueueWorkerCommand):
    help = (
        "Run a supervised database background worker: it registers and beats, recovers dead "
        "runs, and hands its run back to the queue when stopped."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        # Internal: the supervisor starts its executor child with the id of its worker row.
        parser.add_argument("--executor-of", type=int, default=None, help=SUPPRESS)

    def handle(self, *, executor_of: int | None = None, **options: Any) -> None:
        self.configure_logging(options["verbosity"])
        if executor_of is not None:
            executor.run_executor(executor_of, options)
        else:
            supervisor.Supervisor(options).start(reload=options["reload"])
