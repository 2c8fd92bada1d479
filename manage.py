#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qualifier.settings")
    from django.core.management import execute_from_command_line

    from qualifier.environment import SettingError, exit_with

    try:
        execute_from_command_line(sys.argv)
    except SettingError as exc:  # one line naming the setting, not a traceback
        exit_with(exc)


if __name__ == "__main__":
    main()
