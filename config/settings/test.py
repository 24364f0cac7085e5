"""The test suite: real Postgres and Redis (URLs from the environment, set by `make test`)."""

import os

from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASES, REDIS_URL

# One test database and cache namespace per pytest process, so two suites (two checkouts, or a
# developer's run beside CI's) can share one Postgres and Redis server without destroying each other's data.
RUN_ID = os.environ.get("TURNPIKE_TEST_RUN_ID", str(os.getpid()))
DATABASES["default"]["TEST"] = {"NAME": f"test_turnpike_{RUN_ID}"}

DEBUG = False
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; never used outside tests
TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS = True
TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS = False
TURNPIKE_MASTER_KEY = "test:dGVzdC1tYXN0ZXIta2V5LTMyLWJ5dGVzLWxvbmchISE="
TURNPIKE_MASTER_KEYS_RETIRED = []
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"tp:test:{RUN_ID}",
    }
}
# The test client connects directly (REMOTE_ADDR); tests behind a proxy say so with override_settings.
ALLAUTH_TRUSTED_PROXY_COUNT = 0
CELERY_TASK_ALWAYS_EAGER = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve static files straight from the finders (no collectstatic before tests).
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
