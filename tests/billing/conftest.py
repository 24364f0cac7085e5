"""Billing tests share the dashboard's worlds (a workspace with an owner, a credential and a key)."""

from tests.dashboard.conftest import world_a, world_b  # noqa: F401 (fixtures)
