"""ASGI entry point. Like wsgi.py, it refuses to start when a system check fails."""

import os
import sys

from django.core.asgi import get_asgi_application
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from qualifier.environment import SettingError, exit_with

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qualifier.settings")

try:
    application = get_asgi_application()
except SettingError as exc:
    exit_with(exc)
try:
    call_command("check", fail_level="ERROR")
except SystemCheckError as exc:  # the checks' report, which names each setting; no traceback
    print(exc, file=sys.stderr)
    raise SystemExit(4) from None  # gunicorn's "the application could not be loaded"
