"""Signals about recovered runs, for projects that want to tell someone (an email, a chat)."""

from __future__ import annotations

from django.dispatch import Signal

#: Sent once per recovered run, after the transaction that recovered it has committed (never
#: for a recovery that was rolled back), with `sender=QualificationRun` and the keyword
#: arguments `run` (the run as it is after the recovery), `previous_status`, `new_status`,
#: `policy` ("fail" or "resume"), `source` (a RecoverySource value) and `reason`. A slice of a
#: run worked as slices is recovered on its own: `run` is then the slice (`run.parent_id`).
run_recovered = Signal()
