"""Writes for tenants. Every function is keyword-only, checks what it must, writes an audit row in the
same transaction as the change, and leaves side effects (emails, cache invalidation) to on_commit.

Authorisation (may this member do this?) is checked here, not only in views, so the API, the
dashboard, Django admin and management commands share one rule set.

Operators (platform staff in Django admin) are not members of the workspaces they fix. Services they
use take `operator=True`: the role check is replaced by "the acting user is active staff", and the
audit row, still written in the workspace's log under the operator's email, carries
`{"operator": true}`. Platform-wide changes (managed credentials here, plans in billing.services)
are audited with no workspace.

One concept per module; import from `tenants.services` (this package re-exports them):
- common: audit, audit_changes, authorize / require_permission / operator_metadata, unique slugs
  (imports none of the others)
- datakeys: unwrapping a workspace's data key, the platform key AAD, master_key_rotate
- workspaces: workspace_create / update, workspace_billing_update, plans_changed
- credentials: a workspace's provider credentials, plus the secret / base URL / live-check helpers
- platform_credentials: managed credentials (platform_credential_save / secret)
- keys: gateway keys and their allowed-model patterns
- members: invitations (and their links), memberships and the owner rules
"""

from tenants.services.common import audit, audit_changes, authorize, operator_metadata, require_permission
from tenants.services.credentials import (
    provider_credential_create,
    provider_credential_remove,
    provider_credential_rotate,
    provider_credential_secret,
    provider_credential_update,
)
from tenants.services.datakeys import master_key_rotate, platform_key_aad
from tenants.services.keys import (
    GATEWAY_KEY_DISPLAY_CHARS,
    MAX_MODEL_PATTERNS,
    clean_model_patterns,
    gateway_key_create,
    gateway_key_revoke,
    gateway_key_update,
)
from tenants.services.members import (
    invitation_accept,
    invitation_accept_url,
    invitation_create,
    invitation_for_next,
    invitation_for_token,
    invitation_reissue,
    invitation_revoke,
    membership_change_role,
    membership_remove,
)
from tenants.services.platform_credentials import platform_credential_save, platform_credential_secret
from tenants.services.workspaces import plans_changed, workspace_billing_update, workspace_create, workspace_update

__all__ = [
    "GATEWAY_KEY_DISPLAY_CHARS",
    "MAX_MODEL_PATTERNS",
    "audit",
    "audit_changes",
    "authorize",
    "clean_model_patterns",
    "gateway_key_create",
    "gateway_key_revoke",
    "gateway_key_update",
    "invitation_accept",
    "invitation_accept_url",
    "invitation_create",
    "invitation_for_next",
    "invitation_for_token",
    "invitation_reissue",
    "invitation_revoke",
    "master_key_rotate",
    "membership_change_role",
    "membership_remove",
    "operator_metadata",
    "plans_changed",
    "platform_credential_save",
    "platform_credential_secret",
    "platform_key_aad",
    "provider_credential_create",
    "provider_credential_remove",
    "provider_credential_rotate",
    "provider_credential_secret",
    "provider_credential_update",
    "require_permission",
    "workspace_billing_update",
    "workspace_create",
    "workspace_update",
]

# request log: stored bodies opt-in (tenants/services/logging.py)
from tenants.services.logging import gateway_key_logging_update, workspace_logging_update

__all__ += ["gateway_key_logging_update", "workspace_logging_update"]
