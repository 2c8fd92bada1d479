"""LOG_FORMAT=json: one JSON object per log line, for log collectors that parse fields.

The standard library's logging is enough: a Formatter that writes the record's own fields and
the structured ones the code passes with `extra=` (run_id, worker, source, reason, ...), so
nothing is parsed back out of a message and no dependency is added.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

#: Fields the code passes with `extra=`; each appears in the JSON line when the record has it.
STRUCTURED_FIELDS = ("event", "run_id", "worker", "source", "reason", "cause", "count")


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: timestamp (UTC, ISO 8601), level, logger, message,
    the structured fields present, and the traceback if any (newlines escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in STRUCTURED_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)
