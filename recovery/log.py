"""Logging helpers for the recovery app."""

from __future__ import annotations

import logging

from .exceptions import WorkerStopping


class HandedBackTasks(logging.Filter):
    """A task that ended with `WorkerStopping` was handed back in order when its worker stopped:
    Django's tasks logger reports it as an ERROR with a traceback; make it one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0] if record.exc_info else None
        if exc_type is not None and issubclass(exc_type, WorkerStopping):
            record.msg = f"{record.msg} (handed back: %s)"
            record.args = (*(record.args or ()), record.exc_info[1])
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info = record.exc_text = None
        return True
