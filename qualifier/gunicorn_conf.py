"""gunicorn settings for qualifier: `gunicorn -c python:qualifier.gunicorn_conf qualifier.wsgi`.

It offers recovery gunicorn's documented server hooks (`pre_fork`, `post_worker_init`), so each
worker starts its recovery when gunicorn says it is ready, with or without --preload. Every
other gunicorn setting comes from the command line or GUNICORN_CMD_ARGS as usual.
"""

from recovery.gunicorn_hooks import post_worker_init, pre_fork

__all__ = ["post_worker_init", "pre_fork"]
