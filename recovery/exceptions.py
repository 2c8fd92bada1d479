"""Exceptions that end up in the task queue's own records."""


class RunRecovered(Exception):
    """Recorded on the task row of a run that recovery failed or handed back: the task's worker
    is gone, and the run was recovered without it."""


class WorkerStopping(Exception):
    """Raised in a run's task when its worker is shutting down: the run is handed back to the
    queue with its results kept, and this task row ends FAILED with this reason."""
