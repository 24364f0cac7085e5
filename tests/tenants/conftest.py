"""Fixtures for the tenants tests: users, workspaces built through the real services, members.

The fake provider (`fake_provider_url`) comes from tests/conftest.py."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from tenants.models import Membership, User, Workspace
from tenants.roles import Role
from tenants.services import workspace_create

_seq = itertools.count(1)

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    def make(email: str | None = None, password: str = PASSWORD) -> User:
        return User.objects.create_user(email=email or f"user{next(_seq)}@example.com", password=password)

    return make


@pytest.fixture
def make_workspace(make_user: Callable[..., User]) -> Callable[..., Workspace]:
    """A workspace created by `workspace_create` (owner membership, wrapped data key, audit row)."""

    def make(name: str | None = None, owner: User | None = None) -> Workspace:
        return workspace_create(name=name or f"Workspace {next(_seq)}", acting_user=owner or make_user())

    return make


@pytest.fixture
def add_member(make_user: Callable[..., User]) -> Callable[..., Membership]:
    def add(workspace: Workspace, role: str = Role.DEVELOPER, user: User | None = None) -> Membership:
        return Membership.objects.create(workspace=workspace, user=user or make_user(), role=role)

    return add


@pytest.fixture
def owner(make_user: Callable[..., User]) -> User:
    return make_user("owner@example.com")


@pytest.fixture
def workspace(make_workspace: Callable[..., Workspace], owner: User) -> Workspace:
    return make_workspace(name="Acme", owner=owner)
