"""Local development (`make dev`): debug on, mail printed to the console, loopback providers allowed."""

from config.env import env_bool, env_str
from config.settings.base import *  # noqa: F403

DEBUG = env_bool("DJANGO_DEBUG", True)
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS = env_bool("TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS", True)
TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS = env_bool("TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS", False)
