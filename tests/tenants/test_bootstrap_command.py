"""`manage.py bootstrap_workspace`: the scripted setup used by `make dev`, demos and operators."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from billing.models import LedgerEntry
from billing.selectors import ledger_balance_nanos
from tenants.models import AuditLog, GatewayKey, Membership, ProviderCredential, User, Workspace
from tenants.roles import Role
from tenants.services import provider_credential_secret

ROOT = Path(__file__).resolve().parents[2]
FAKE_KEY = "fake-bootstrap-key-0001"
OTHER_FAKE_KEY = "fake-bootstrap-key-0002"

# WhiteNoise warns when STATIC_ROOT (.dev/staticfiles) has not been collected, which a test run never does.
ignore_uncollected_static = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")


def bootstrap(*args: str) -> dict:
    out = io.StringIO()
    call_command("bootstrap_workspace", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def key_row(api_key: str) -> GatewayKey:
    return GatewayKey.objects.select_related("workspace").get(key_hash=hashlib.sha256(api_key.encode()).hexdigest())


# --- in process ------------------------------------------------------------------------------------------------


def test_json_output_has_a_working_key_and_urls(db):
    result = bootstrap("--email", "Dev@Example.com", "--workspace", "Demo", "--credit-usd", "25")

    workspace = Workspace.objects.get(slug=result["workspace"])
    assert result["workspace_name"] == "Demo" == workspace.name
    assert result["api_key"].startswith("tpk_live_")
    key = key_row(result["api_key"])
    assert key.workspace == workspace and key.is_active
    assert result["proxy_base_url"] == settings.TURNPIKE_PROXY_BASE_URL
    assert result["dashboard_url"] == f"{settings.TURNPIKE_DASHBOARD_URL.rstrip('/')}/w/{workspace.slug}/"
    assert result["email"] == "dev@example.com"
    user = User.objects.get(email="dev@example.com")
    assert result["password"] and user.check_password(result["password"])
    assert Membership.objects.get(workspace=workspace, user=user).role == Role.OWNER
    assert result["balance_usd"] == "25"
    assert result["credential"] is None


def test_chosen_password_is_used(db):
    result = bootstrap("--email", "pw@example.com", "--workspace", "W", "--password", "a-chosen-password-42")
    assert result["password"] == "a-chosen-password-42"
    assert User.objects.get(email="pw@example.com").check_password("a-chosen-password-42")


@ignore_uncollected_static
def test_bootstrapped_user_can_log_in_straight_away(db):
    result = bootstrap("--email", "login@example.com", "--workspace", "Demo")
    address = EmailAddress.objects.get(email="login@example.com")
    assert address.verified and address.primary

    client = Client()
    response = client.post("/accounts/login/", {"login": "login@example.com", "password": result["password"]})
    assert response.status_code == 302
    assert "confirm-email" not in response["Location"]
    assert client.session.get("_auth_user_id") == str(address.user_id)


@ignore_uncollected_static
def test_an_unverified_user_cannot_log_in_which_is_why_bootstrap_verifies(db):
    """Control for the test above: mandatory verification really is on."""
    User.objects.create_user(email="raw@example.com", password="a-chosen-password-42")
    client = Client()
    response = client.post("/accounts/login/", {"login": "raw@example.com", "password": "a-chosen-password-42"})
    assert "_auth_user_id" not in client.session
    assert response.status_code in (200, 302)


def test_rerunning_reuses_everything_but_mints_a_new_key(db):
    first = bootstrap("--email", "dev@example.com", "--workspace", "Demo", "--credit-usd", "25")
    second = bootstrap("--email", "dev@example.com", "--workspace", "Demo", "--credit-usd", "25")

    assert second["workspace"] == first["workspace"]
    assert second["password"] is None, "an existing user's password is neither changed nor shown"
    assert User.objects.get(email="dev@example.com").check_password(first["password"])
    assert User.objects.filter(email="dev@example.com").count() == 1
    assert Workspace.objects.count() == 1
    workspace = Workspace.objects.get()
    assert second["api_key"] != first["api_key"]
    assert key_row(first["api_key"]).is_active and key_row(second["api_key"]).is_active
    assert GatewayKey.objects.filter(workspace=workspace).count() == 2
    # The grant is not doubled.
    assert second["balance_usd"] == "25"
    assert ledger_balance_nanos(workspace=workspace) == 25_000_000_000
    assert LedgerEntry.objects.filter(workspace=workspace).count() == 1


@pytest.mark.parametrize("amount,nanos", [("25", 25_000_000_000), ("0.5", 500_000_000), ("1e2", 100_000_000_000)])
def test_credit_posts_one_grant_of_exactly_that_amount(db, amount, nanos):
    result = bootstrap("--email", "c@example.com", "--workspace", "Credit", "--credit-usd", amount)
    entry = LedgerEntry.objects.get()
    assert entry.kind == LedgerEntry.Kind.GRANT
    assert entry.amount_nanos == nanos
    assert entry.workspace.slug == result["workspace"]


def test_human_output_shows_the_key_once(db):
    out = io.StringIO()
    call_command("bootstrap_workspace", "--email", "h@example.com", "--workspace", "Human", stdout=out)
    text = out.getvalue()
    lines = [line for line in text.splitlines() if line.startswith("Gateway key (shown once):")]
    assert len(lines) == 1
    assert key_row(lines[0].split()[-1]).workspace.name == "Human"
    assert "Proxy base URL:" in text and "Password:" in text


def test_provider_credential_is_checked_stored_and_reused(db, fake_provider_url):
    base_url = f"{fake_provider_url}/v1"
    args = ["--email", "p@example.com", "--workspace", "P", "--provider", "openai_compatible"]
    first = bootstrap(*args, "--provider-key", FAKE_KEY, "--provider-base-url", base_url)

    credential = ProviderCredential.objects.get()
    assert first["credential"] == credential.slug
    assert credential.secret_last4 == FAKE_KEY[-4:] and credential.last_validated_at is not None
    assert provider_credential_secret(credential=credential) == FAKE_KEY

    bootstrap(*args, "--provider-key", FAKE_KEY, "--provider-base-url", base_url)
    assert ProviderCredential.objects.count() == 1
    assert not AuditLog.objects.filter(action="credential.rotated").exists()

    # A new provider key for the same provider and URL rotates the stored one.
    third = bootstrap(*args, "--provider-key", OTHER_FAKE_KEY, "--provider-base-url", base_url)
    credential = ProviderCredential.objects.get()
    assert third["credential"] == credential.slug
    assert provider_credential_secret(credential=credential) == OTHER_FAKE_KEY
    assert AuditLog.objects.filter(action="credential.rotated").count() == 1


def test_rejected_provider_key_creates_nothing(db, fake_provider_url):
    with pytest.raises(CommandError):
        bootstrap(
            "--email", "rej@example.com", "--workspace", "Rej",
            "--provider", "openai_compatible", "--provider-key", "sk-wrong-key-123456",
            "--provider-base-url", f"{fake_provider_url}/v1",
        )  # fmt: skip
    assert not User.objects.filter(email="rej@example.com").exists()
    assert not Workspace.objects.exists() and not GatewayKey.objects.exists()


# --- as a real process ----------------------------------------------------------------------------------------


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "bootstrap_workspace", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(proc: subprocess.CompletedProcess[str], reason: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert reason in lines[0], lines[0]
    assert proc.stdout.strip() == ""


def with_defaults(args: list[str]) -> list[str]:
    base = {"--email": "ok@example.com", "--workspace": "Bad"}
    for flag in args:
        base.pop(flag, None)
    return [item for pair in base.items() for item in pair] + args


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,reason",
    [
        (["--email", "nope"], "not a valid email"),
        (["--credit-usd", "-5"], "positive"),
        (["--credit-usd", "abc"], "not a number"),
        (["--credit-usd", "0.0000000001"], "nano-dollar"),
        (["--provider", "openai"], "--provider and --provider-key go together"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_arguments_exit_non_zero_with_one_line_reason(transactional_db, args, reason):
    proc = run_command(*with_defaults(args))
    assert_refused(proc, reason)
    assert not User.objects.filter(email="ok@example.com").exists()
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize(
    "args,reason",
    [
        (["--credit-usd", "0"], "positive"),
        (["--credit-usd", "NaN"], "positive"),
        (["--credit-usd", "Infinity"], "positive"),
        (["--credit-usd", "99999999999"], "large"),
        (["--provider-key", "sk-something-long"], "--provider and --provider-key go together"),
        (["--provider", "azure_openai", "--provider-key", "fake-azure-0001"], "base URL"),
        (["--workspace", "   "], "name"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_more_bad_arguments_are_refused_with_a_reason(db, args, reason):
    with pytest.raises(CommandError, match=re.escape(reason)):
        bootstrap(*with_defaults(args))
    assert not User.objects.filter(email="ok@example.com").exists()
    assert not LedgerEntry.objects.exists()


@pytest.mark.slow
def test_provider_key_rejected_by_the_provider_exits_non_zero(transactional_db, fake_provider_url):
    proc = run_command(
        "--email", "rej@example.com", "--workspace", "Rej",
        "--provider", "openai_compatible", "--provider-key", "sk-wrong-key-123456",
        "--provider-base-url", f"{fake_provider_url}/v1", "--json",
    )  # fmt: skip
    assert_refused(proc, "")
    assert "sk-wrong-key-123456" not in proc.stderr
    assert not User.objects.filter(email="rej@example.com").exists()


@pytest.mark.slow
def test_successful_run_prints_json_with_a_key_of_the_new_workspace(transactional_db, fake_provider_url):
    proc = run_command(
        "--email", "sub@example.com", "--workspace", "Sub", "--credit-usd", "10",
        "--provider", "openai_compatible", "--provider-key", FAKE_KEY,
        "--provider-base-url", f"{fake_provider_url}/v1", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    key = key_row(result["api_key"])
    assert key.workspace.slug == result["workspace"] and key.is_active
    assert ledger_balance_nanos(workspace=key.workspace) == 10_000_000_000
    assert EmailAddress.objects.get(email="sub@example.com").verified
    assert ProviderCredential.objects.get(workspace=key.workspace).secret_last4 == FAKE_KEY[-4:]


def test_plan_puts_the_workspace_on_an_existing_plan(db):
    from billing.models import Plan

    call_command("loaddata", "dev_plans", verbosity=0)
    data = bootstrap("--email", "p@example.com", "--workspace", "Planned", "--plan", "dev-demo")
    assert data["plan"] == "dev-demo"
    assert Workspace.objects.get(slug=data["workspace"]).plan == Plan.objects.get(code="dev-demo")


def test_unknown_plan_is_refused_before_anything_is_created(db):
    with pytest.raises(CommandError, match="does not exist"):
        bootstrap("--email", "np@example.com", "--workspace", "Nope", "--plan", "gold")
    assert not User.objects.filter(email="np@example.com").exists()
