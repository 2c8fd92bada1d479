"""ASGI entry point. Like wsgi.py, it refuses to start when a system check fails."""

import os

from django.core.asgi import get_asgi_application
from django.core.management import call_command

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qualifier.settings")

application = get_asgi_application()
call_command("check", fail_level="ERROR")
