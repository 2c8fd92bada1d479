"""Reading settings from the environment (and `.env`): django-environ, with the project's
readers (common.inputs, common.values) as its casts, so that a bad value stops the process with
one line that names the variable and the value (`SettingError`), never a traceback.

`manage.py`, `wsgi.py` and `asgi.py` print a `SettingError` as one line and exit. A value set in
Python instead (a settings module, `override_settings`) is judged by the same readers in the
apps' system checks.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from ipaddress import IPv4Network, IPv6Network
from typing import Any, NoReturn

import environ
from django.core.exceptions import ImproperlyConfigured

from common.inputs import parse_bool, show, unstorable
from common.values import (
    MAX_INTERVAL_SECONDS,
    parse_bounded,
    parse_choice,
    parse_dotted_path,
    parse_header_name,
    parse_host_name,
    parse_networks,
    parse_secret,
)

from .criteria import LIST_FIELDS, Criteria, CriteriaError

#: user:password@ in a URL: the password never appears in a message or an error page.
URL_PASSWORD = re.compile(r"(?P<start>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
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


def _url_config(value: str, parse: Callable[[str], dict[str, Any]], example: str) -> Any:
    shown = show(hide_url_password(value))
    if not _URL_SCHEME.match(value.strip()):
        raise ValueError(f"{shown} is not a URL such as {example}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # django-environ warns of unknown schemes
            return parse(value.strip())
    except Exception as exc:  # django-environ raises what urllib raises
        problem = hide_url_password(str(exc)) or type(exc).__name__
        raise ValueError(f"{shown} is not a URL such as {example} ({problem})") from None


def parse_database_url(value: str) -> dict[str, Any]:
    example = "postgres://user:password@host:5432/name"
    config = _url_config(value, environ.Env.db_url_config, example)
    if config.get("ENGINE") not in SUPPORTED_ENGINES:
        raise ValueError(f"{show(hide_url_password(value))} is not a postgres:// or sqlite:// URL")
    return config


def parse_mailers(value: str) -> dict[str, Any]:
    """Django's MAILERS from a mail URL such as smtp+tls://user:password@host:587 (read with
    django-environ's email_url)."""
    example = "smtp+tls://user:password@mail.example.com:587 or consolemail://"
    config = _url_config(value, environ.Env.email_url_config, example)
    backend = config["EMAIL_BACKEND"]
    if backend.endswith(".smtp.EmailBackend"):
        names = MAIL_OPTIONS
    elif backend.endswith(".filebased.EmailBackend"):
        names = {"EMAIL_FILE_PATH": "file_path"}
    else:  # console, locmem, dummy: no options
        names = {}
    options = {option: config[key] for key, option in names.items() if key in config}
    return {"default": {"BACKEND": backend, "OPTIONS": options}}


def parse_time_zone(value: str) -> str:
    text = value.strip()
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{show(value)} is not a time zone such as UTC or Europe/Berlin") from None
    return text


def parse_proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """'X-Forwarded-Proto' -> ('HTTP_X_FORWARDED_PROTO', 'https'); empty -> None."""
    name = parse_header_name(value)
    return ("HTTP_" + name.upper().replace("-", "_"), "https") if name else None


class Env(environ.Env):
    """django-environ's `Env`, each kind of value read by the project's one reader for it.

    A value the reader refuses, or text the database could not store, raises `SettingError`
    naming the variable. Defaults are returned as given, unread.
    """

    def get_value(
        self, var: str, cast: Any = None, default: Any = environ.Env.NOTSET, parse_default=False
    ) -> Any:
        text = self.ENVIRON.get(var)
        problem = unstorable(text) if isinstance(text, str) else None
        if problem:
            raise SettingError(f"Setting {var} is invalid: the text {problem}.")
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError as exc:
            raise SettingError(f"Setting {var} is invalid: {exc}.") from None

    def read(self, var: str, reader: Callable[[str], Any], default: Any) -> Any:
        """The variable read by `reader`, or `default` when it is unset or blank."""
        text = self.ENVIRON.get(var, "")
        return default if not text.strip() else self.get_value(var, cast=reader, default=default)

    def bool(self, var: str, default: bool) -> bool:  # type: ignore[override]
        """true/false, yes/no, on/off, 1/0: anything else is an error, not False."""
        return self.read(var, parse_bool, default)

    def int(  # type: ignore[override]
        self,
        var: str,
        default: int | None,
        *,
        minimum: int = 0,
        maximum: int = MAX_INTERVAL_SECONDS,
    ) -> int | None:
        """A whole number from `minimum` to `maximum`; blank means `default`."""
        return self.read(var, partial(parse_bounded, minimum=minimum, maximum=maximum), default)

    def list(self, var: str, default: Iterable[str] = ()) -> list[str]:  # type: ignore[override]
        """Comma-separated items, each stripped, blanks dropped."""
        text = self.str(var, default=",".join(default))
        return [item.strip() for item in text.split(",") if item.strip()]

    def choice(self, var: str, default: str, choices: Iterable[str]) -> str:
        return self.read(var, partial(parse_choice, choices=tuple(choices)), default)

    def dotted_path(self, var: str, default: str) -> str:
        return self.read(var, parse_dotted_path, default)

    def networks(self, var: str) -> tuple[IPv4Network | IPv6Network, ...]:
        return self.read(var, parse_networks, ())

    def header_name(self, var: str) -> str:
        return self.read(var, parse_header_name, "")

    def host_name(self, var: str) -> str:
        return self.read(var, parse_host_name, "")

    def secret(self, var: str) -> str:
        """A bearer token of at least 32 characters, or "" for none. Unlike the other readers,
        its message never repeats the value."""
        return self.read(var, parse_secret, "")

    def log_level(self, var: str, default: str = "INFO") -> str:
        return self.choice(var, default, LOG_LEVELS)

    def log_format(self, var: str, default: str = "text") -> str:
        return self.choice(var, default, LOG_FORMATS)

    def time_zone(self, var: str, default: str = "UTC") -> str:
        return self.read(var, parse_time_zone, default)

    def database(self, var: str, default: str) -> dict[str, Any]:
        return self.read(var, parse_database_url, None) or parse_database_url(default)

    def cache(self, var: str, default: str) -> dict[str, Any]:
        example = "locmemcache://, dbcache://qualifier_cache or redis://host:6379/0"
        reader = partial(_url_config, parse=environ.Env.cache_url_config, example=example)
        return self.read(var, reader, None) or reader(default)

    def mailers(self, var: str) -> dict[str, Any]:
        """Django's MAILERS from a mail URL; blank: {} (no mailer: mail is not configured)."""
        return self.read(var, parse_mailers, {})

    def proxy_ssl_header(self, var: str) -> tuple[str, str] | None:
        return self.read(var, parse_proxy_ssl_header, None)

    def criteria(self, prefix: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The default criteria, each field from the variable `prefix` + FIELD when it is set
        (blank is a value here: an empty employee bound means no bound), read by the criteria's
        own reader, the one the pages and the API use."""
        texts = {
            field: self.str(prefix + field.upper()) if prefix + field.upper() in self else default
            for field, default in defaults.items()
        }
        try:
            return Criteria().with_overrides(texts).as_dict()
        except CriteriaError as exc:
            field, message = next(iter(exc.errors.items()))
            if field == "criteria":  # the profile as a whole: its lists' length together
                names = ", ".join(prefix + name.upper() for name in LIST_FIELDS)
                raise SettingError(f"Settings {names} are invalid: {message}.") from None
            raise SettingError(f"Setting {prefix + field.upper()} is invalid: {message}.") from None
