"""WSGI entry point (gunicorn qualifier.wsgi).

gunicorn runs no system checks of its own, so the checks run here: a server with bad settings
refuses to start with the check's message instead of serving with them.
"""

import os

from django.core.management import call_command
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qualifier.settings")

application = get_wsgi_application()
call_command("check", fail_level="ERROR")
