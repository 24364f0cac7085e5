"""python -m billing.fake_stripe --host 127.0.0.1 --port 12111"""

from __future__ import annotations

import argparse

import uvicorn

from billing.fake_stripe import __doc__ as DOC
from billing.fake_stripe.app import FakeStripe
from billing.fake_stripe.settings import DEFAULT_PORT, Settings, parse_delays


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m billing.fake_stripe", description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--secret-key", help="the API key to accept (env FAKE_STRIPE_SECRET_KEY)")
    parser.add_argument("--webhook-url", help="where to POST events (env FAKE_STRIPE_WEBHOOK_URL)")
    parser.add_argument("--webhook-secret", help="the signing secret (env FAKE_STRIPE_WEBHOOK_SECRET)")
    parser.add_argument("--retry-delays", help='seconds between delivery attempts, "1,2,4" or "none"')
    parser.add_argument("--api-version", help="the api_version events carry (env FAKE_STRIPE_API_VERSION)")
    parser.add_argument("--public-url", help="base URL of checkout pages (env FAKE_STRIPE_PUBLIC_URL)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        parser.error(f"FAKE_STRIPE_WEBHOOK_RETRY_DELAYS: {exc}")
    if args.secret_key:
        settings.secret_key = args.secret_key
    if args.webhook_url:
        settings.webhook_url = args.webhook_url
    if args.webhook_secret:
        settings.webhook_secret = args.webhook_secret
    if args.retry_delays:
        try:
            settings.retry_delays = parse_delays(args.retry_delays)
        except ValueError as exc:
            parser.error(f"--retry-delays: {exc}")
    if args.api_version:
        settings.api_version = args.api_version
    if args.public_url:
        settings.public_url = args.public_url.rstrip("/")
    if settings.webhook_url and not settings.webhook_url.startswith(("http://", "https://")):
        parser.error(f"--webhook-url must be an http(s) URL: {settings.webhook_url!r}")
    uvicorn.run(
        FakeStripe(settings),
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on",
        access_log=False,
    )


if __name__ == "__main__":
    main()
