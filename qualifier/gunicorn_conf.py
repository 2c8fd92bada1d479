"""gunicorn settings for qualifier: `gunicorn -c python:qualifier.gunicorn_conf qualifier.wsgi`.

A sync worker serves one request at a time, so a client that sends or reads slowly holds a whole
worker: gunicorn serves only behind a buffering proxy (nginx: docs/deploy.md), which takes the
whole request before passing it on and the whole answer at once, and it listens on a private
address only. These defaults say so; the command line and GUNICORN_CMD_ARGS still win over them.

It also offers recovery gunicorn's documented server hooks (`pre_fork`, `post_worker_init`), so
each worker starts its recovery when gunicorn says it is ready, with or without --preload.
"""

from __future__ import annotations

import os

from common.inputs import parse_whole_number, show
from recovery.gunicorn_hooks import post_worker_init, pre_fork

__all__ = ["bind", "graceful_timeout", "post_worker_init", "pre_fork", "timeout", "workers"]


def _port() -> int:
    value = os.environ.get("PORT", "") or "8000"
    try:
        return parse_whole_number(value, minimum=1, maximum=65535)
    except ValueError:
        raise SystemExit(f"Error: PORT={show(value)} is not a port number (1 to 65535).") from None


#: Loopback, on PORT (default 8000): the proxy on this machine connects here. gunicorn's own
#: default would be every interface (0.0.0.0) as soon as the environment sets PORT. A proxy on
#: another host: --bind with this host's private address, never a public one.
bind = [f"127.0.0.1:{_port()}"]
#: A worker silent this long is killed and replaced (a request that runs away); the proxy waits
#: a little longer for an answer (proxy_read_timeout 35s in the nginx example).
timeout = 30
#: On a restart, workers finish the requests they are serving within this time.
graceful_timeout = 30
#: gunicorn's advice for sync workers, unless WEB_CONCURRENCY says otherwise.
workers = parse_whole_number(
    os.environ.get("WEB_CONCURRENCY", "") or str(2 * (os.cpu_count() or 1) + 1),
    minimum=1,
    maximum=256,
)
