"""Settings for qualifier, read from the environment (and a `.env` file) with django-environ.

Every variable is documented in `.env.example`. Each is typed here, once, by the project's
reader for its kind (qualifier.environment), so a bad value stops every command and server with
one line naming the variable and the value. The apps' settings take their defaults from each
app's conf.py, which the apps read them through; their system checks judge what is set in
Python instead (a settings module, override_settings) and the relations between settings.
"""

from __future__ import annotations

from pathlib import Path

from django.utils.csp import CSP

# Imported under lower-case names: every upper-case name here becomes a Django setting.
from common import conf as common_conf
from qualifier import conf as qualifier_conf
from qualifier.environment import Env, SettingError
from recovery import conf as recovery_conf

BASE_DIR = Path(__file__).resolve().parent.parent

env = Env()
# The test suite sets QUALIFIER_IGNORE_DOTENV so a developer's .env cannot change what it checks.
if not env.bool("QUALIFIER_IGNORE_DOTENV", default=False):
    Env.read_env(BASE_DIR / ".env", overwrite=False)

# DEBUG decides how secrets are handled, so a typo must not silently mean anything.
DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise SettingError(
            "SECRET_KEY is not set and DEBUG is off. Set SECRET_KEY in the environment or in "
            ".env (for example: python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DEBUG=true for local development."
        )
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS and browser protections (production: docs/howto/deploy.md) ---
# Redirect plain HTTP to HTTPS.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# A load balancer's health checks often come over plain HTTP from inside: they answer there too
# (they carry no user data; /metrics is still redirected).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Send the session and CSRF cookies over HTTPS only.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
# Strict-Transport-Security: seconds browsers keep to HTTPS (0 = no header).
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0, maximum=10 * 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Behind a TLS proxy: the header it sets to "https" (e.g. X-Forwarded-Proto).
SECURE_PROXY_SSL_HEADER = env.proxy_ssl_header("SECURE_PROXY_SSL_HEADER")
# The pages load scripts, styles and images from this server only, and are never framed.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Below both apps: API tokens, the JSON API's conventions, the throttle, input readers.
    "common",
    # Before django_tasks_db: recovery's db_worker (a supervised worker that registers, beats
    # and hands its run back on shutdown) extends and replaces django-tasks-db's.
    "recovery",
    "django_tasks_db",
    "qualifier",
    # The API's Swagger UI (/docs/api/), from ninja's own static files: no CDN, so the
    # Content-Security-Policy above holds.
    "ninja",
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
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Responses for signed-in users and API callers carry prospect data: never cached.
    "qualifier.middleware.PrivateResponsesMiddleware",
    # Failed sign-ins are limited per client (429 with Retry-After).
    "qualifier.middleware.SignInThrottleMiddleware",
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

DATABASES = {
    "default": env.database("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
}
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
    # A database that does not answer must not hang a server start for minutes, and a client
    # that died or froze inside a transaction must not hold a run's row (and so keep a dead run
    # PROCESSING) for as long as its session lives: the server ends idle transactions, and TCP
    # keepalives notice a vanished client within about a minute instead of two hours.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 10)
    DATABASES["default"]["OPTIONS"].setdefault(
        "options",
        "-c idle_in_transaction_session_timeout="
        + str(
            env.int(
                "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", default=60_000, maximum=24 * 3600 * 1000
            )
        ),
    )
    for _name, _value in {
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }.items():
        DATABASES["default"]["OPTIONS"].setdefault(_name, _value)
DATABASES["default"].setdefault(
    "CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0, maximum=24 * 3600)
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.time_zone("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# One way of writing a moment on the pages and in the admin (qualifier/formats/en/formats.py).
FORMAT_MODULE_PATH = ["qualifier.formats"]

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

# Mail, for password resets: a URL such as smtp+tls://user:password@mail.example.com:587
# (django-environ's email_url). Empty: no mail, and the site serves sign-in and sign-out only
# (no password change or reset pages; the admin's password change stays, for staff).
_mailers = env.mailers("EMAIL_URL")
if _mailers:  # without, Django's mail check would warn of a MAILERS with no default
    MAILERS = _mailers
# The sender of password reset mails.
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="webmaster@localhost")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
# API requests that fail CSRF get a JSON answer; pages get Django's usual page.
CSRF_FAILURE_VIEW = "qualifier.views.csrf_failure"
# The DEBUG error page hides passwords in URLs (DATABASE_URL) as well as Django's usual keys.
DEFAULT_EXCEPTION_REPORTER_FILTER = "qualifier.errors.UrlPasswordFilter"
# The upload limit is enforced while the body streams in, before the file is stored.
FILE_UPLOAD_HANDLERS = [
    "qualifier.uploads.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Failed sign-ins, API tokens and password reset requests are counted here (see
# AUTH_FAILURE_LIMIT), so every process and host must see the same counts: the default is a
# table in the database (`manage.py migrate` creates it), shared with no extra service.
# redis://host:6379/0 works too; locmemcache:// is per process (each would allow the limit).
CACHES = {"default": env.cache("CACHE_URL", default="dbcache://qualifier_cache")}
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.db.DatabaseCache":
    # Django's default of 300 entries would let a few hundred clients' failures push (cull)
    # another client's count out of the table, resetting it; expired rows are culled first.
    CACHES["default"].setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 50_000)
# --- The throttle and bearer authentication (common.conf; checked by common/checks.py) ---
# Failed sign-ins, API tokens or password reset requests one client may make per window
# before a 429 with Retry-After.
AUTH_FAILURE_LIMIT = env.int(
    "AUTH_FAILURE_LIMIT", default=common_conf.DEFAULTS["AUTH_FAILURE_LIMIT"], minimum=1
)
# The window in seconds, from the client's first failure.
AUTH_FAILURE_WINDOW_SECONDS = env.int(
    "AUTH_FAILURE_WINDOW_SECONDS",
    default=common_conf.DEFAULTS["AUTH_FAILURE_WINDOW_SECONDS"],
    minimum=1,
)
# Behind proxies: the header that carries the client's address, e.g. X-Forwarded-For, read
# only when the connection comes from AUTH_TRUSTED_PROXIES (comma-separated networks). The
# client is the right-most address in it that is not a trusted proxy. Empty: the connection's
# address. The throttle and METRICS_ALLOWED_NETWORKS both use this address.
AUTH_CLIENT_IP_HEADER = env.header_name("AUTH_CLIENT_IP_HEADER")
AUTH_TRUSTED_PROXIES = env.networks("AUTH_TRUSTED_PROXIES")
# The operator's bearer token for the recovery API (/api/qualify/recovery), at least 32
# characters; empty: none.
RECOVERY_API_TOKEN = env.secret("RECOVERY_API_TOKEN")

# --- Recovery (recovery.conf; relations checked by recovery/checks.py) ---
# Minutes without progress after which a processing run counts as hung (the backstop for a
# worker that is alive but stuck on one run).
STUCK_RUN_TIMEOUT_MINUTES = env.int(
    "STUCK_RUN_TIMEOUT_MINUTES",
    default=recovery_conf.DEFAULTS["STUCK_RUN_TIMEOUT_MINUTES"],
    minimum=1,
    maximum=recovery_conf.MAX_TIMEOUT_MINUTES,
)
# Recover dead runs whenever a server or worker process starts.
RECOVERY_ON_STARTUP = env.bool(
    "RECOVERY_ON_STARTUP", default=recovery_conf.DEFAULTS["RECOVERY_ON_STARTUP"]
)
# How often each worker process beats (registers that it is alive) on the database.
RECOVERY_HEARTBEAT_SECONDS = env.int(
    "RECOVERY_HEARTBEAT_SECONDS",
    default=recovery_conf.DEFAULTS["RECOVERY_HEARTBEAT_SECONDS"],
    minimum=1,
)
# A worker that has not beaten for this long is dead; at least three heartbeats.
RECOVERY_WORKER_TIMEOUT_SECONDS = env.int(
    "RECOVERY_WORKER_TIMEOUT_SECONDS",
    default=recovery_conf.DEFAULTS["RECOVERY_WORKER_TIMEOUT_SECONDS"],
    minimum=1,
)
# Every server and worker process sweeps this often (one at a time across all of them);
# 0 turns the periodic sweeps off. Independent of RECOVERY_ON_STARTUP.
RECOVERY_SWEEP_INTERVAL_SECONDS = env.int(
    "RECOVERY_SWEEP_INTERVAL_SECONDS",
    default=recovery_conf.DEFAULTS["RECOVERY_SWEEP_INTERVAL_SECONDS"],
    minimum=0,
)
# How long a stopping worker may take to finish its batch and hand its run back.
RECOVERY_SHUTDOWN_GRACE_SECONDS = env.int(
    "RECOVERY_SHUTDOWN_GRACE_SECONDS",
    default=recovery_conf.DEFAULTS["RECOVERY_SHUTDOWN_GRACE_SECONDS"],
    minimum=1,
)
# A run whose worker died this many times is failed instead of handed back once more.
RECOVERY_MAX_ATTEMPTS = env.int(
    "RECOVERY_MAX_ATTEMPTS", default=recovery_conf.DEFAULTS["RECOVERY_MAX_ATTEMPTS"], minimum=1
)
# The host name this machine's workers register under (empty: the machine's own). Processes
# that share it check each other's pids locally, so give each machine (container) its own.
RECOVERY_HOSTNAME = env.host_name("RECOVERY_HOSTNAME")
# What a sweep does with a dead run: fail it, or resume it (back to the queue, where the next
# worker continues it); a run whose worker died RECOVERY_MAX_ATTEMPTS times is failed anyway.
RECOVERY_POLICY = env.choice(
    "RECOVERY_POLICY",
    default=recovery_conf.DEFAULTS["RECOVERY_POLICY"],
    choices=recovery_conf.POLICIES,
)
# The order workers take queued runs in: `fair` (round robin across the runs' owners, so one
# user's backlog does not hold back another user's run) or `fifo` (the order they were queued).
RECOVERY_QUEUE_ORDER = env.choice(
    "RECOVERY_QUEUE_ORDER",
    default=recovery_conf.DEFAULTS["RECOVERY_QUEUE_ORDER"],
    choices=recovery_conf.QUEUE_ORDERS,
)
# A run of more prospects than this is worked as slices of about this many, each a task of
# its own, so several workers work one run at once (aim for a few seconds of work per slice).
RECOVERY_SLICE_SIZE = env.int(
    "RECOVERY_SLICE_SIZE",
    default=recovery_conf.DEFAULTS["RECOVERY_SLICE_SIZE"],
    minimum=1,
    maximum=recovery_conf.MAX_SLICE_SIZE,
)
# The django.tasks task that executes a run; recovery enqueues it when it hands a run back.
RECOVERY_RUN_TASK = env.dotted_path(
    "RECOVERY_RUN_TASK", default=recovery_conf.DEFAULTS["RECOVERY_RUN_TASK"]
)
# /metrics (Prometheus): a bearer token of at least 32 characters, and/or comma-separated client
# networks (CIDRs) that may read it without one. Neither set: /metrics answers 404 (off).
METRICS_TOKEN = env.secret("METRICS_TOKEN")
METRICS_ALLOWED_NETWORKS = env.networks("METRICS_ALLOWED_NETWORKS")

# --- Qualification (qualifier.conf; checked by qualifier/checks.py) ---
# Largest CSV upload or JSON request body accepted, in bytes (the API answers 413 above it).
QUALIFIER_MAX_UPLOAD_BYTES = env.int(
    "QUALIFIER_MAX_UPLOAD_BYTES",
    default=qualifier_conf.DEFAULTS["QUALIFIER_MAX_UPLOAD_BYTES"],
    minimum=1,
    maximum=qualifier_conf.MAX_UPLOAD_BYTES_LIMIT,
)
# Most prospects one run may hold (a CSV upload or a JSON request).
QUALIFIER_MAX_PROSPECTS = env.int(
    "QUALIFIER_MAX_PROSPECTS",
    default=qualifier_conf.DEFAULTS["QUALIFIER_MAX_PROSPECTS"],
    minimum=1,
    maximum=qualifier_conf.MAX_PROSPECTS_LIMIT,
)
# Most columns besides the known ones that a CSV or a JSON item may have (kept as extra data).
QUALIFIER_MAX_EXTRA_COLUMNS = env.int(
    "QUALIFIER_MAX_EXTRA_COLUMNS",
    default=qualifier_conf.DEFAULTS["QUALIFIER_MAX_EXTRA_COLUMNS"],
    minimum=0,
    maximum=qualifier_conf.MAX_EXTRA_COLUMNS_LIMIT,
)
# Most pending or processing runs one user may have at once.
QUALIFIER_MAX_ACTIVE_RUNS_PER_USER = env.int(
    "QUALIFIER_MAX_ACTIVE_RUNS_PER_USER",
    default=qualifier_conf.DEFAULTS["QUALIFIER_MAX_ACTIVE_RUNS_PER_USER"],
    minimum=1,
    maximum=qualifier_conf.MAX_ACTIVE_RUNS_LIMIT,
)
# Most prospects one user may submit in any 24 hours, over all their runs.
QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY = env.int(
    "QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY",
    default=qualifier_conf.DEFAULTS["QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY"],
    minimum=1,
    maximum=qualifier_conf.MAX_PROSPECTS_PER_DAY_LIMIT,
)
# Retention (manage.py prune_runs): finished runs are kept this many days after they ended;
# recovery events (the audit trail) at least as long, and a run they name is kept with them.
QUALIFIER_RUN_RETENTION_DAYS = env.int(
    "QUALIFIER_RUN_RETENTION_DAYS",
    default=qualifier_conf.DEFAULTS["QUALIFIER_RUN_RETENTION_DAYS"],
    minimum=1,
    maximum=recovery_conf.MAX_RETENTION_DAYS,
)
RECOVERY_EVENT_RETENTION_DAYS = env.int(
    "RECOVERY_EVENT_RETENTION_DAYS",
    default=recovery_conf.DEFAULTS["RECOVERY_EVENT_RETENTION_DAYS"],
    minimum=1,
    maximum=recovery_conf.MAX_RETENTION_DAYS,
)
# Dotted path of the scorer: a callable (prospect, criteria) -> qualifier.scoring.Score.
QUALIFIER_SCORER = env.dotted_path(
    "QUALIFIER_SCORER", default=qualifier_conf.DEFAULTS["QUALIFIER_SCORER"]
)
# Milliseconds the default scorer waits per prospect, to make runs slow enough to watch in demos.
QUALIFIER_SCORING_DELAY_MS = env.int(
    "QUALIFIER_SCORING_DELAY_MS",
    default=qualifier_conf.DEFAULTS["QUALIFIER_SCORING_DELAY_MS"],
    minimum=0,
    maximum=qualifier_conf.MAX_SCORING_DELAY_MS,
)
# The default ideal-customer profile; each run may override any of it. QUALIFIER_INDUSTRIES,
# QUALIFIER_MIN_EMPLOYEES, ... QUALIFIER_MIN_SCORE, read by the criteria's own reader (lists
# are comma-separated; an empty employee bound means no bound; defaults in qualifier/conf.py).
QUALIFIER_DEFAULT_CRITERIA = env.criteria("QUALIFIER_", qualifier_conf.DEFAULT_CRITERIA)

# --- Background tasks: the database is the queue (django-tasks-db) ---
TASKS = {
    "default": {
        "BACKEND": env.dotted_path("TASKS_BACKEND", default="django_tasks_db.DatabaseBackend"),
        # `default` for the service's runs; `recovery-drill` for `manage.py recovery_drill`'s
        # own runs, which only its own workers take.
        "QUEUES": ["default", qualifier_conf.DRILL_QUEUE],
    }
}

# text: the readable lines; json: one JSON object per line (qualifier/logformat.py).
LOG_FORMAT = env.log_format("LOG_FORMAT")
_JSON_FORMATTER = {"()": "qualifier.logformat.JsonFormatter"}
# Recovery's records, and the common app's (the throttle's, which were recovery's).
_RECOVERY_LOG_LEVEL = env.log_level("RECOVERY_LOG_LEVEL")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": _JSON_FORMATTER if LOG_FORMAT == "json" else {"format": "%(message)s"},
        "timestamped": _JSON_FORMATTER
        if LOG_FORMAT == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "filters": {
        "handed_back": {"()": "recovery.log.HandedBackTasks"},
        "not_ours": {
            "()": "qualifier.environment.OtherLoggers",
            "exclude": ["common", "recovery", "qualifier"],
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        # Everything else at WARNING and above, with tracebacks: Django's request errors
        # (django.request logs every 500 with its traceback) and any library's.
        "errors": {
            "class": "logging.StreamHandler",
            "formatter": "timestamped",
            "level": "WARNING",
            "filters": ["not_ours"],  # those have the console handler
        },
    },
    "root": {"handlers": ["errors"], "level": "WARNING"},
    "loggers": {
        "recovery": {"handlers": ["console"], "level": _RECOVERY_LOG_LEVEL},
        # The throttle's and bearer authentication's records (moved from recovery, and read at
        # its level).
        "common": {"handlers": ["console"], "level": _RECOVERY_LOG_LEVEL},
        "qualifier": {"handlers": ["console"], "level": env.log_level("QUALIFIER_LOG_LEVEL")},
        # Django's default handlers print only with DEBUG on (or mail admins we do not have):
        # send its records to the root handler instead, in production too.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        # A task handed back when its worker stops is not an error (recovery/log.py).
        "django.tasks": {"filters": ["handed_back"], "propagate": True},
    },
}
