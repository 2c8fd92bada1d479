"""Reading settings from the environment: every bad value stops the process with one line
that names the setting and the value (`SettingError`), never a traceback.

settings.py reads Django's own settings through `Environment`, since Django needs them before
any system check can run; `manage.py`, `wsgi.py` and `asgi.py` print a `SettingError` as one
line and exit. The application's own settings are validated by system checks instead
(qualifier/checks.py, recovery/checks.py). Values go through the same parsers as every other
input (recovery/inputs.py).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
import zoneinfo
from collections.abc import Mapping
from typing import Any, NoReturn

import environ
from django.core.exceptions import ImproperlyConfigured

from recovery.inputs import parse_bool, parse_whole_number, show, unstorable

#: user:password@ in a URL: the password never appears in a message or an error page.
URL_PASSWORD = re.compile(r"(?P<start>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-]*$")
LOG_FORMATS = ("text", "json")
#: django-environ's EMAIL_* keys, as the OPTIONS of an SMTP mailer (Django's MAILERS).
MAIL_OPTIONS = {
    "EMAIL_HOST": "host",
    "EMAIL_PORT": "port",
    "EMAIL_HOST_USER": "username",
    "EMAIL_HOST_PASSWORD": "password",
    "EMAIL_USE_TLS": "use_tls",
    "EMAIL_USE_SSL": "use_ssl",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SUPPORTED_ENGINES = ("django.db.backends.postgresql", "django.db.backends.sqlite3")


class OtherLoggers(logging.Filter):
    """Passes the records of every logger except the named ones (which have their own handler,
    so a handler on the root logger would print their records twice)."""

    def __init__(self, exclude: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__()
        self.exclude = tuple(exclude)

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(
            record.name == name or record.name.startswith(name + ".") for name in self.exclude
        )


class SettingError(ImproperlyConfigured):
    """A setting from the environment cannot be used; the message says which and why."""


def hide_url_password(value: Any) -> Any:
    if isinstance(value, str) and "@" in value:
        return URL_PASSWORD.sub(r"\g<start>********@", value)
    return value


def exit_with(error: SettingError) -> NoReturn:
    """One line on stderr, then exit: what manage.py and the servers do with a bad setting."""
    print(f"Error: {error}", file=sys.stderr)
    # 4 is gunicorn's "the application could not be loaded": its arbiter stops too.
    raise SystemExit(4)


class Environment:
    """Typed reads of environment variables (and `.env`) for settings.py."""

    def __init__(self, env: environ.Env) -> None:
        self.env = env

    def fail(self, name: str, value: Any, problem: str) -> NoReturn:
        raise SettingError(
            f"Setting {name}={show(hide_url_password(value))} is invalid: {problem}."
        )

    def str(self, name: str, default: str = "") -> str:
        value = self.env.str(name, default=default)
        problem = unstorable(value)
        if problem:
            self.fail(name, value, f"the text {problem}")
        return value

    def app_setting(self, name: str, defaults: Mapping[str, Any]) -> Any:
        """An application setting: the environment's text when it is set (its app's system
        checks judge it), else the default from the app's conf.py, the one place it lives."""
        return self.str(name) if name in self.env.ENVIRON else defaults[name]

    def app_settings(self, prefix: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """A mapping of application settings, each key read from `prefix` + KEY."""
        return {
            key: self.app_setting(prefix + key.upper(), {prefix + key.upper(): default})
            for key, default in defaults.items()
        }

    def bool(self, name: str, default: bool) -> bool:
        value = self.str(name, default="")
        if not value.strip():
            return default
        try:
            return parse_bool(value)
        except ValueError:
            self.fail(name, value, "not a boolean: use true or false (or 1/0, yes/no, on/off)")

    def int(self, name: str, default: int, *, minimum: int = 0, maximum: int) -> int:
        value = self.str(name, default=str(default))
        try:
            return parse_whole_number(value, minimum=minimum, maximum=maximum)
        except ValueError:
            self.fail(name, value, f"not a whole number from {minimum:,} to {maximum:,}")

    def list(self, name: str, default: list[str]) -> list[str]:
        value = self.str(name, default=",".join(default))
        return [item.strip() for item in value.split(",") if item.strip()]

    def log_level(self, name: str, default: str = "INFO") -> str:
        value = self.str(name, default=default)
        if value.strip().upper() not in LOG_LEVELS:
            self.fail(name, value, f"not a log level: use one of {', '.join(LOG_LEVELS)}")
        return value.strip().upper()

    def log_format(self, name: str, default: str = "text") -> str:
        value = self.str(name, default=default)
        if value.strip().lower() not in LOG_FORMATS:
            self.fail(name, value, f"not a log format: use one of {', '.join(LOG_FORMATS)}")
        return value.strip().lower()

    def time_zone(self, name: str, default: str = "UTC") -> str:
        value = self.str(name, default=default).strip()
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.fail(name, value, "not a time zone name such as UTC or Europe/Berlin")
        return value

    def database(self, name: str, default: str) -> dict[str, Any]:
        value = self.str(name, default=default).strip()
        if not _URL_SCHEME.match(value):
            self.fail(name, value, "not a URL such as postgres://user:password@host:5432/name")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # django-environ warns of unknown schemes
                config = environ.Env.db_url_config(value)
        except Exception as exc:  # django-environ raises what urllib raises
            self.fail(name, value, hide_url_password(str(exc)) or type(exc).__name__)
        if config.get("ENGINE") not in SUPPORTED_ENGINES:
            self.fail(name, value, "use a postgres:// or sqlite:// URL")
        return config

    def cache(self, name: str, default: str) -> dict[str, Any]:
        value = self.str(name, default=default).strip()
        try:
            return environ.Env.cache_url_config(value)
        except Exception:  # django-environ raises what urllib raises
            self.fail(
                name,
                value,
                "not a cache URL such as locmemcache://, dbcache://qualifier_cache or "
                "redis://host:6379/0",
            )

    def mailers(self, name: str) -> dict[str, Any]:
        """Django's MAILERS from a URL such as smtp+tls://user:password@host:587 (read with
        django-environ's email_url); empty: {} (no mailer: mail is not configured)."""
        value = self.str(name, default="").strip()
        if not value:
            return {}
        try:
            config = environ.Env.email_url_config(value)
        except Exception:  # django-environ raises what urllib raises, or ImproperlyConfigured
            self.fail(
                name,
                value,
                "not a mail URL such as smtp+tls://user:password@mail.example.com:587 or "
                "consolemail://",
            )
        backend = config["EMAIL_BACKEND"]
        if backend.endswith(".smtp.EmailBackend"):
            names = MAIL_OPTIONS
        elif backend.endswith(".filebased.EmailBackend"):
            names = {"EMAIL_FILE_PATH": "file_path"}
        else:  # console, locmem, dummy: no options
            names = {}
        options = {option: config[key] for key, option in names.items() if key in config}
        return {"default": {"BACKEND": backend, "OPTIONS": options}}

    def proxy_ssl_header(self, name: str) -> tuple[str, str] | None:
        """'X-Forwarded-Proto' -> ('HTTP_X_FORWARDED_PROTO', 'https'); empty -> None."""
        value = self.str(name, default="").strip()
        if not value:
            return None
        if not _HEADER_NAME.match(value):
            self.fail(name, value, "name the header the proxy sets, e.g. X-Forwarded-Proto")
        return ("HTTP_" + value.upper().replace("-", "_"), "https")
