"""Settings shared by every environment. Everything deployment-specific comes from the environment
(see docs/configuration.md); dev.py, test.py and production.py adjust from here."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from config.env import ImproperlyConfiguredEnv, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def _load_dev_env_file() -> None:
    """Outside production, pick up what `make dev` wrote to .dev/env (service URLs, generated secrets),
    so `manage.py` works in a plain shell after `make dev`. Real environment variables win."""
    path = BASE_DIR / ".dev" / "env"
    if os.environ.get("DJANGO_SETTINGS_MODULE", "").endswith("production") or not path.exists():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        os.environ.setdefault(key.strip(), value.strip())


_load_dev_env_file()

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "insecure-dev-only-secret-key-change-me")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "allauth",
    "allauth.account",
    "tenants",
    "billing",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "dashboard.context_processors.turnpike",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/turnpike")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "tp:cache",
    }
}

AUTH_USER_MODEL = "tenants.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard:home"

# django-allauth: email is the login, no usernames, verification required before first login.
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Turnpike] "
ACCOUNT_RATE_LIMITS = {
    # Failed logins are limited per IP and per account (allauth counts them in the Redis cache).
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/h/ip",
    "reset_password": "20/m/ip,5/m/key",
    "confirm_email": "1/3m/key",
}
ACCOUNT_ADAPTER = "tenants.adapters.AccountAdapter"
# How many reverse proxies (load balancer, ingress) in front of the web app append to X-Forwarded-For.
# 0: REMOTE_ADDR is the client. Login rate limits (allauth's and the Django admin's) and audit rows key on
# the client this implies (tenants.adapters.client_ip); see docs/configuration.md, "Behind a load balancer".
ALLAUTH_TRUSTED_PROXY_COUNT = env_int("TURNPIKE_TRUSTED_PROXY_COUNT", 0)
if ALLAUTH_TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfiguredEnv("TURNPIKE_TRUSTED_PROXY_COUNT must be 0 or more")

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Turnpike <no-reply@turnpike.local>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".dev" / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "config.api.exception_handler",
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery messages are nudges, not records: what must not be lost lives in the usage stream's consumer
# group (billing/ingest.py) and in Postgres, and a lost trigger is replaced by the next one from beat.
# So the Redis transport runs without ack emulation: a message belongs to the worker that took it, and
# acknowledging needs no Redis. With emulation on, a Redis restart while a message is unacknowledged
# kills the worker: kombu restores it through a connection it has already detached ("'NoneType' object
# has no attribute 'hostname'"); tests/test_worker_redis_restart.py reproduces that restart.
CELERY_TASK_ACKS_LATE = False
CELERY_BROKER_TRANSPORT_OPTIONS = {"ack_emulation": False, "socket_connect_timeout": 5, "socket_keepalive": True}
# Reconnect forever, at start-up and after a loss (the default gives up after 100 attempts), and on
# channel errors as well as connection errors.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CHANNEL_ERROR_RETRY = True
# A task running when the connection drops finishes: its message could not be redelivered anyway.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# config/celery.py: a worker that receives no task for this long while its broker answers shuts down
# so that its supervisor starts a fresh one (0 disables). Beat sends a task every second.
TURNPIKE_WORKER_STALL_SECONDS = env_int("TURNPIKE_WORKER_STALL_SECONDS", 120)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {}

# --- Turnpike ---------------------------------------------------------------------------------------
# Envelope encryption of provider secrets: "<key-id>:<urlsafe base64 of 32 bytes>". Retired keys stay
# listed (comma separated) until `manage.py rotate_master_key` has re-wrapped every data key.
TURNPIKE_MASTER_KEY = env_str("TURNPIKE_MASTER_KEY", "dev:ZGV2LW9ubHktbWFzdGVyLWtleS0zMi1ieXRlcyEhISE=")
TURNPIKE_MASTER_KEYS_RETIRED = env_list("TURNPIKE_MASTER_KEYS_RETIRED", [])
# Public URLs printed in snippets and emails.
TURNPIKE_PROXY_BASE_URL = env_str("TURNPIKE_PROXY_BASE_URL", "http://127.0.0.1:8080/v1")
TURNPIKE_DASHBOARD_URL = env_str("TURNPIKE_DASHBOARD_URL", "http://127.0.0.1:8000")
# Provider base URL overrides that resolve to loopback/private addresses are refused (SSRF) unless set.
TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS = env_bool("TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS", False)
TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS = env_bool("TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS", True)
# Where a provider type has no base URL override, credential checks (and later the proxy) go here.
# Setting TURNPIKE_PROVIDER_BASE_URL_<TYPE> (e.g. ..._OPENAI) points a provider type elsewhere.
TURNPIKE_FAKE_PROVIDER_URL = env_str("TURNPIKE_FAKE_PROVIDER_URL", "http://127.0.0.1:8090")
TURNPIKE_CREDENTIAL_CHECK_TIMEOUT = float(env_str("TURNPIKE_CREDENTIAL_CHECK_TIMEOUT", "10"))
TURNPIKE_INVITATION_TTL_DAYS = env_int("TURNPIKE_INVITATION_TTL_DAYS", 7)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # httpx logs every request URL at INFO; keep provider calls out of the logs.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# Usage ingestion (billing/ingest.py): beat triggers a drain every second; entries a dead consumer
# read but never acknowledged are taken over after this idle time.
TURNPIKE_INGEST_CLAIM_IDLE_MS = env_int("TURNPIKE_INGEST_CLAIM_IDLE_MS", 30_000)
TURNPIKE_INGEST_INTERVAL_SECONDS = float(env_str("TURNPIKE_INGEST_INTERVAL_SECONDS", "1.0"))
CELERY_BEAT_SCHEDULE["billing.ingest_usage"] = {
    "task": "billing.ingest_usage",
    "schedule": TURNPIKE_INGEST_INTERVAL_SECONDS,
    "options": {"expires": 10},
}

# --- Billing (issue 9; docs/billing.md) --------------------------------------------------------------
# Stripe: the real SDK. In dev and tests it talks to the bundled fake (billing/fake_stripe) at
# STRIPE_API_BASE; production refuses to start without live values (config/settings/production.py).
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "")  # empty: Stripe's own API
# Top-ups and auto-recharge, whole US dollars.
TURNPIKE_TOPUP_MIN_USD = env_int("TURNPIKE_TOPUP_MIN_USD", 5)
TURNPIKE_TOPUP_MAX_USD = env_int("TURNPIKE_TOPUP_MAX_USD", 10_000)
TURNPIKE_TOPUP_PRESETS_USD = [int(v) for v in env_list("TURNPIKE_TOPUP_PRESETS_USD", ["10", "25", "100", "500"])]
TURNPIKE_AUTO_RECHARGE_MAX_FAILURES = 3
# The issuing entity on invoices (seller). `issuer` prefixes invoice numbers: TP-2026-000123.
TURNPIKE_SELLER = {
    "issuer": env_str("TURNPIKE_SELLER_ISSUER", "TP"),
    "name": env_str("TURNPIKE_SELLER_NAME", "Turnpike B.V."),
    "address": env_str("TURNPIKE_SELLER_ADDRESS", "Keizersgracht 1, 1015 AA Amsterdam, Netherlands"),
    "country": env_str("TURNPIKE_SELLER_COUNTRY", "NL"),
    "tax_id": env_str("TURNPIKE_SELLER_TAX_ID", "NL000000000B01"),
    "email": env_str("TURNPIKE_SELLER_EMAIL", "billing@turnpike.local"),
}
# Sales tax / VAT rate per buyer country, "CC=rate" pairs (e.g. "NL=0.21,DE=0.19"); other countries 0.
TURNPIKE_TAX_RATES = env_list("TURNPIKE_TAX_RATES", ["NL=0.21"])
CELERY_BEAT_SCHEDULE["billing.auto_recharge_sweep"] = {
    "task": "billing.auto_recharge_sweep",
    "schedule": 60.0,
    "options": {"expires": 50},
}
CELERY_BEAT_SCHEDULE["billing.issue_monthly_statements"] = {
    "task": "billing.issue_monthly_statements",
    "schedule": 3600.0,  # hourly; the task issues last month's missing statements, so the 1st is never missed
    "options": {"expires": 600},
}

# Request log: usage events are kept this many days (whole monthly partitions are dropped once the month
# ended that long ago; billing.partitions). 0 keeps them forever. Rollups and the ledger are always kept.
TURNPIKE_USAGE_EVENT_RETENTION_DAYS = env_int("TURNPIKE_USAGE_EVENT_RETENTION_DAYS", 400)
# Exports of more rows than this are built by a Celery task and offered as a download when ready.
TURNPIKE_EXPORT_STREAM_MAX_ROWS = env_int("TURNPIKE_EXPORT_STREAM_MAX_ROWS", 100_000)
CELERY_BEAT_SCHEDULE["billing.usage_partitions"] = {
    "task": "billing.usage_partitions",
    "schedule": 6 * 3600.0,  # creates months three ahead, so a missed day is harmless
    "options": {"expires": 3600},
}
CELERY_BEAT_SCHEDULE["billing.purge_request_bodies"] = {
    "task": "billing.purge_request_bodies",
    "schedule": 3600.0,
    "options": {"expires": 1800},
}
