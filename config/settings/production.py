"""Production: every secret from the environment, refusing to start without them; HTTPS everywhere."""

from config.env import ImproperlyConfiguredEnv, env_bool, env_int, env_str
from config.settings.base import *  # noqa: F403

DEBUG = False
SECRET_KEY = env_str("SECRET_KEY")
TURNPIKE_MASTER_KEY = env_str("TURNPIKE_MASTER_KEY")
if "insecure" in SECRET_KEY or len(SECRET_KEY) < 32:
    raise ImproperlyConfiguredEnv("SECRET_KEY must be a random string of at least 32 characters")

# Billing takes real money: live Stripe keys from the environment, Stripe's own API, never the dev fake.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
if not STRIPE_SECRET_KEY.startswith(("sk_live_", "rk_live_")) and not env_bool("TURNPIKE_STRIPE_TEST_MODE", False):
    raise ImproperlyConfiguredEnv(
        "STRIPE_SECRET_KEY must be a live key (sk_live_… or rk_live_…); set TURNPIKE_STRIPE_TEST_MODE=1 for a staging "
        "deployment on Stripe's test mode"
    )
if not STRIPE_WEBHOOK_SECRET.startswith("whsec_") or "_dev_" in STRIPE_WEBHOOK_SECRET:
    raise ImproperlyConfiguredEnv("STRIPE_WEBHOOK_SECRET must be the endpoint's signing secret (whsec_…) from Stripe")
if env_str("STRIPE_API_BASE", ""):
    raise ImproperlyConfiguredEnv("STRIPE_API_BASE points billing away from Stripe; production never sets it")
STRIPE_API_BASE = ""

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
