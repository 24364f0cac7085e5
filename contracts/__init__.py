"""What the proxy and the Django apps share, and nothing else: Django-free, importable by both sides.

    events      the usage event and its encoding on the Redis stream (proxy writes, billing reads)
    balance     Redis keys and Lua scripts of the prepaid balance and the usage stream
    cachekeys   Redis names of cached key/workspace documents, the invalidation channel, key hashing
    pricing     prices, token usage and the cost rule; money: nano-USD conversions
    crypto      envelope encryption of provider secrets
    providers   the provider list: each type's wire family, default base URL and auth headers
    netguard    the SSRF guard for provider base URLs

The direction is enforced by import-linter (pyproject.toml, tests/test_architecture.py): `proxy` never
imports Django or a Django app, the Django apps never import `proxy`, and `contracts` imports neither.
"""
