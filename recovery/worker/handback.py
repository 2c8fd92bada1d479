"""The one way a worker gives a lease back: at shutdown, after an executor crash, or when its
supervisor is lost. The transition itself is the sweep's (`recovery.sweep.hand_back`), so a
hand-back and a recovery write the same rows the same way; this names the worker's side."""

from __future__ import annotations

from ..models import Worker
from ..sweep import hand_back as _hand_back


def hand_back(worker: Worker, *, source: str, cause: str) -> list[int]:
    """The runs `worker` still holds PROCESSING go back to the queue (or, after too many
    deaths, are failed); returns their ids. Nothing held: nothing written."""
    return _hand_back(worker, source=source, cause=cause, label=str(worker))
