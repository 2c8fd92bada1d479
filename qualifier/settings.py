"""Settings for qualifier, read from the environment (and a `.env` file) with django-environ.

Every variable is documented in `.env.example`. The recovery settings are passed through as
given and validated by the recovery app's system checks, so a bad value is reported by name
with a hint instead of crashing with a traceback.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The test suite sets QUALIFIER_IGNORE_DOTENV so a developer's .env cannot change what it checks.
if not env.bool("QUALIFIER_IGNORE_DOTENV", default=False):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _strict_bool(name: str, default: bool) -> bool:
    """DEBUG decides how secrets are handled, so a typo must not silently mean anything."""
    raw = env.str(name, default=str(default)).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean. Use one of: true, false, 1, 0, yes, no, on, off."
    )


DEBUG = _strict_bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DEBUG is off. Set SECRET_KEY in the environment or in "
            ".env (for example: python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DEBUG=true for local development."
        )
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_tasks_db",
    "recovery",
    "qualifier",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves /static/ from gunicorn too, so a production server needs no extra setup for it.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "qualifier.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "qualifier.wsgi.application"
ASGI_APPLICATION = "qualifier.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the task worker write to the same file: WAL lets readers run beside
    # the writer, IMMEDIATE transactions take the write lock up front (so a recovery sweep's
    # read-then-write cannot be interleaved), and the timeout waits for it instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that does not answer must not hang a server start for minutes.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 10)
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default=None)}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Without `collectstatic`, WhiteNoise serves the apps' static files straight from the finders;
# after it, from STATIC_ROOT with long cache headers.
WHITENOISE_USE_FINDERS = True
# Files served at the site's root, such as /favicon.ico (browsers ask for it on every site).
WHITENOISE_ROOT = BASE_DIR / "qualifier" / "root"

# Cookies belong to a host, not a port: two instances on one machine need different names, or
# signing in to one signs you out of the other.
SESSION_COOKIE_NAME = env.str("SESSION_COOKIE_NAME", default="sessionid")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
# API requests that fail CSRF get a JSON answer; pages get Django's usual page.
CSRF_FAILURE_VIEW = "qualifier.views.csrf_failure"


def _positive_bytes(name: str, default: int) -> int:
    raw = env.str(name, default=str(default)).strip()
    if not raw.isdigit() or int(raw) <= 0:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a positive whole number of bytes.")
    return int(raw)


# --- Web pages and APIs ---
# Bearer token for the recovery API (/api/qualify/recovery); empty turns token authentication off.
RECOVERY_API_TOKEN = env.str("RECOVERY_API_TOKEN", default="")
# Largest CSV upload or JSON request body accepted, in bytes (the API answers 413 above it).
QUALIFIER_MAX_UPLOAD_BYTES = _positive_bytes("QUALIFIER_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)

# --- Recovery (validated by recovery/checks.py; read through recovery.conf) ---
# Minutes without a sign of life (heartbeat) after which an active run counts as stuck.
STUCK_RUN_TIMEOUT_MINUTES = env.str("STUCK_RUN_TIMEOUT_MINUTES", default="5")
# Recover stuck runs automatically whenever a server or worker process starts.
RECOVERY_ON_STARTUP = env.str("RECOVERY_ON_STARTUP", default="true")
# How often a worker writes its heartbeat while it processes a run.
RECOVERY_HEARTBEAT_SECONDS = env.str("RECOVERY_HEARTBEAT_SECONDS", default="10")
# Each task worker also sweeps this often, so a run whose worker died is failed even when no
# process restarts afterwards. 0 turns the periodic sweeps off.
RECOVERY_SWEEP_INTERVAL_SECONDS = env.str("RECOVERY_SWEEP_INTERVAL_SECONDS", default="60")

# --- Qualification (validated by qualifier/checks.py; read through qualifier.conf) ---
# Most prospects one run may hold (a CSV upload or a JSON request).
QUALIFIER_MAX_PROSPECTS = env.str("QUALIFIER_MAX_PROSPECTS", default="10000")
# Dotted path of the scorer: a callable (prospect, criteria) -> qualifier.scoring.Score.
QUALIFIER_SCORER = env.str("QUALIFIER_SCORER", default="qualifier.scoring.rule_based_scorer")
# Milliseconds the default scorer waits per prospect, to make runs slow enough to watch in demos.
QUALIFIER_SCORING_DELAY_MS = env.str("QUALIFIER_SCORING_DELAY_MS", default="0")
# The default ideal-customer profile; each run may override any of it. Lists are comma-separated;
# an empty employee bound means no bound.
QUALIFIER_DEFAULT_CRITERIA = {
    "industries": env.str(
        "QUALIFIER_INDUSTRIES", default="Software,SaaS,Information Technology,Fintech"
    ),
    "min_employees": env.str("QUALIFIER_MIN_EMPLOYEES", default="50"),
    "max_employees": env.str("QUALIFIER_MAX_EMPLOYEES", default="5000"),
    "countries": env.str("QUALIFIER_COUNTRIES", default=""),
    "title_keywords": env.str(
        "QUALIFIER_TITLE_KEYWORDS",
        default="CEO,CTO,CFO,COO,CMO,CRO,Chief,Founder,Co-Founder,Owner,President,VP,"
        "Vice President,Head,Director",
    ),
    "excluded_domains": env.str("QUALIFIER_EXCLUDED_DOMAINS", default=""),
    "min_score": env.str("QUALIFIER_MIN_SCORE", default="60"),
}

# --- Background tasks: the database is the queue (django-tasks-db) ---
TASKS = {
    "default": {
        "BACKEND": env.str("TASKS_BACKEND", default="django_tasks_db.DatabaseBackend"),
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(message)s"},
        "timestamped": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        "recovery": {"handlers": ["console"], "level": env.str("RECOVERY_LOG_LEVEL", "INFO")},
        "qualifier": {"handlers": ["console"], "level": env.str("QUALIFIER_LOG_LEVEL", "INFO")},
    },
}
