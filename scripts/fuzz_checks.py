"""A Schemathesis check that scripts/fuzz_api.py loads (SCHEMATHESIS_HOOKS): no answer is larger
than FUZZ_MAX_ANSWER_BYTES. An error answer that repeats every key of its request (issue 15)
is found here, as a slow answer is by --max-response-time."""

from __future__ import annotations

import os

import schemathesis

MAX_ANSWER_BYTES = int(os.environ.get("FUZZ_MAX_ANSWER_BYTES", str(1024 * 1024)))


@schemathesis.check
def answer_size_is_bounded(ctx, response, case) -> None:
    size = len(response.content or b"")
    if size > MAX_ANSWER_BYTES:
        raise AssertionError(
            f"The answer is {size:,} bytes; no answer may be larger than {MAX_ANSWER_BYTES:,}."
        )
