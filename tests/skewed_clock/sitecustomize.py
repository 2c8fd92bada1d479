"""Loaded by Python at start-up when this folder is on PYTHONPATH: the process's wall clock
runs SKEWED_CLOCK_SECONDS off, as on a host whose clock is wrong (its monotonic clock, used for
timed waits, stays true, as the kernel keeps it). Used by the liveness process tests."""

import datetime as _datetime
import os as _os
import time as _time

_OFFSET = float(_os.environ.get("SKEWED_CLOCK_SECONDS", "0"))
_SHIFT = _datetime.timedelta(seconds=_OFFSET)
_real_time = _time.time
_real_time_ns = _time.time_ns


class _SkewedDatetime(_datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return super().now(tz) + _SHIFT

    @classmethod
    def utcnow(cls):
        return super().now(_datetime.UTC).replace(tzinfo=None) + _SHIFT


_time.time = lambda: _real_time() + _OFFSET
_time.time_ns = lambda: _real_time_ns() + int(_OFFSET * 1e9)
_datetime.datetime = _SkewedDatetime
