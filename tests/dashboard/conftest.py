"""Fixtures for dashboard tests: two workspaces with one of everything, and logged-in clients."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from allauth.account.models import EmailAddress
from django.test import Client

from tenants.models import GatewayKey, Invitation, Membership, ProviderCredential, User, Workspace
from tenants.roles import Role
from tenants.services import (
    gateway_key_create,
    invitation_create,
    provider_credential_create,
    workspace_create,
)

PASSWORD = "correct-horse-battery-staple"
SECRET_A = "fake-secret-of-workspace-a-9A9A"
SECRET_B = "fake-secret-of-workspace-b-7B7B"
_seq = itertools.count(1)


@dataclass
class World:
    workspace: Workspace
    owner: User
    credential: ProviderCredential
    key: GatewayKey
    key_plaintext: str
    invitation: Invitation
    member: Membership  # a developer


def make_user(email: str | None = None) -> User:
    user = User.objects.create_user(email=email or f"user{next(_seq)}@example.com", password=PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


def build_world(name: str, secret: str, fake_provider_url: str) -> World:
    owner = make_user()
    workspace = workspace_create(name=name, acting_user=owner)
    credential = provider_credential_create(
        workspace=workspace,
        provider="openai",
        label=f"{name} OpenAI",
        secret=secret,
        base_url=f"{fake_provider_url}/v1",
        acting_user=owner,
    )
    key, plaintext = gateway_key_create(workspace=workspace, name=f"{name} key", acting_user=owner)
    invitation, _ = invitation_create(
        workspace=workspace, email=f"invitee{next(_seq)}@example.com", role=Role.VIEWER, acting_user=owner
    )
    member = Membership.objects.create(workspace=workspace, user=make_user(), role=Role.DEVELOPER)
    return World(workspace, owner, credential, key, plaintext, invitation, member)


@pytest.fixture
def world_a(db, fake_provider_url) -> World:
    return build_world("Alpha", SECRET_A, fake_provider_url)


@pytest.fixture
def world_b(db, fake_provider_url) -> World:
    return build_world("Bravo", SECRET_B, fake_provider_url)


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def member_client(world_a):
    """A client logged in as a member of workspace A with the given role."""

    def make(role: str) -> tuple[Client, User]:
        user = make_user()
        Membership.objects.create(workspace=world_a.workspace, user=user, role=role)
        return client_for(user), user

    return make
