"""WSGI entry point (gunicorn qualifier.wsgi).

gunicorn runs no system checks of its own, so the checks run here: a server with bad settings
refuses to start with the check's message instead of serving with them. A setting Django
cannot even load with stops it with one line that names the setting.
"""

import os
import sys

from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.core.wsgi import get_wsgi_application

from qualifier.environment import SettingError, exit_with

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qualifier.settings")

try:
    application = get_wsgi_application()
except SettingError as exc:  # one line naming the setting, and gunicorn stops
    exit_with(exc)
try:
    call_command("check", fail_level="ERROR")
except SystemCheckError as exc:  # the checks' report, which names each setting; no traceback
    print(exc, file=sys.stderr)
    raise SystemExit(4) from None  # gunicorn's "the application could not be loaded"
