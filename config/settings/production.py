"""Production: every secret from the environment, refusing to start without them; HTTPS everywhere."""

from config.env import ImproperlyConfiguredEnv, env_bool, env_int, env_str
from config.settings.base import *  # noqa: F403

DEBUG = False
SECRET_KEY = env_str("SECRET_KEY")
TURNPIKE_MASTER_KEY = env_str("TURNPIKE_MASTER_KEY")
if "insecure" in SECRET_KEY or len(SECRET_KEY) < 32:
    raise ImproperlyConfiguredEnv("SECRET_KEY must be a random string of at least 32 characters")

TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS = env_bool("TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS", False)
TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS = True

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load-balancer and kubelet probes speak plain http
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https"
STATIC_ROOT = BASE_DIR / "staticfiles"  # noqa: F405
