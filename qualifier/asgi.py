"""ASGI entry point. Like wsgi.py, it refuses to start when a system check fails."""

import os

from django.core.asgi import get_asgi_application
from django.core.management import call_command

from qualifier.environment import SettingError, exit_with

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qualifier.settings")

try:
    application = get_asgi_application()
except SettingError as exc:
    exit_with(exc)
call_command("check", fail_level="ERROR")
