"""The fake's configuration: CLI flags, else environment variables, else these defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_PORT = 12111  # stripe-mock's port; the Procfile runs the fake here
DEFAULT_SECRET_KEY = "sk_test_fake_stripe"
DEFAULT_WEBHOOK_SECRET = "whsec_fake_stripe"
# the version stripe-python 16.1.0 pins; events carry it as the account's default API version
DEFAULT_API_VERSION = "2026-10-28.endive"
DEFAULT_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)  # seconds before each retry of a failed webhook delivery
WEBHOOK_TIMEOUT = 10.0  # seconds for one delivery attempt
SESSION_LIFETIME = 24 * 3600  # a checkout session expires 24 h after creation unless `expires_at` says sooner


@dataclass
class Settings:
    secret_key: str = DEFAULT_SECRET_KEY
    webhook_url: str | None = None
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    api_version: str = DEFAULT_API_VERSION
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    public_url: str | None = None  # overrides http://<Host header> in checkout session URLs
    webhook_timeout: float = WEBHOOK_TIMEOUT

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        return cls(
            secret_key=env.get("FAKE_STRIPE_SECRET_KEY") or DEFAULT_SECRET_KEY,
            webhook_url=env.get("FAKE_STRIPE_WEBHOOK_URL") or None,
            webhook_secret=env.get("FAKE_STRIPE_WEBHOOK_SECRET") or DEFAULT_WEBHOOK_SECRET,
            api_version=env.get("FAKE_STRIPE_API_VERSION") or DEFAULT_API_VERSION,
            retry_delays=parse_delays(env.get("FAKE_STRIPE_WEBHOOK_RETRY_DELAYS") or ""),
            public_url=(env.get("FAKE_STRIPE_PUBLIC_URL") or "").rstrip("/") or None,
        )


def parse_delays(text: str) -> tuple[float, ...]:
    """ "1,2,4" → (1.0, 2.0, 4.0); "" → the default; "none" → no retries."""
    text = text.strip()
    if not text:
        return DEFAULT_RETRY_DELAYS
    if text.lower() == "none":
        return ()
    delays = tuple(float(part) for part in text.split(","))
    if any(not (0 <= delay <= 3600) for delay in delays):
        raise ValueError(f"retry delays must be between 0 and 3600 seconds: {text!r}")
    return delays
