"""Who receives billing mail for a workspace."""

from __future__ import annotations

from billing.models import BillingProfile
from tenants.models import Membership, Workspace
from tenants.roles import Role


def billing_contacts(*, workspace: Workspace) -> list[str]:
    """The billing profile's emails; if it names none, the emails of the workspace's owners and finance
    members (sorted, unique)."""
    profile = BillingProfile.objects.filter(workspace=workspace).first()
    if profile is not None and profile.billing_emails:
        return sorted({str(e) for e in profile.billing_emails if e})
    emails = Membership.objects.filter(workspace=workspace, role__in=[Role.OWNER, Role.FINANCE]).values_list(
        "user__email", flat=True
    )
    return sorted({e for e in emails if e})
