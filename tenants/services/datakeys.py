"""Data keys (envelope encryption): each workspace's data key and each platform credential's own data
key are wrapped by a master key from tenants.keyring. Unwrapping for use, the AAD a platform key is
bound to, and re-wrapping under the active master key after a rotation."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from contracts import crypto
from tenants.keyring import keyring
from tenants.models import PlatformCredential, Workspace, WorkspaceDataKey


def _workspace_dek(workspace: Workspace) -> bytes:
    data_key = WorkspaceDataKey.objects.get(workspace=workspace)
    return crypto.unwrap_data_key(
        master_key_id=data_key.master_key_id,
        wrapped=bytes(data_key.wrapped_key),
        workspace_public_id=str(workspace.public_id),
        ring=keyring(),
    )


def platform_key_aad(credential: PlatformCredential) -> str:
    """What a platform credential's data key is bound to (never the same as any workspace's)."""
    return f"platform:{credential.public_id}"


def master_key_rotate(*, batch_size: int = 500) -> int:
    """Re-wrap every data key (workspaces' and platform credentials') not wrapped by the active master
    key. Idempotent and resumable: each row is re-wrapped in its own short transaction under a row lock."""
    active, _ = keyring()
    rewrapped = 0
    for pk in PlatformCredential.objects.exclude(master_key_id=active.key_id).values_list("pk", flat=True):
        with transaction.atomic():
            platform = PlatformCredential.objects.select_for_update().get(pk=pk)
            if platform.master_key_id == active.key_id:
                continue
            aad = platform_key_aad(platform)
            dek = crypto.unwrap_data_key(
                master_key_id=platform.master_key_id,
                wrapped=bytes(platform.wrapped_key),
                workspace_public_id=aad,
                ring=keyring(),
            )
            platform.master_key_id, platform.wrapped_key = crypto.wrap_data_key(
                dek=dek, workspace_public_id=aad, ring=keyring()
            )
            platform.save(update_fields=["master_key_id", "wrapped_key"])
            rewrapped += 1
    while True:
        ids = list(
            WorkspaceDataKey.objects.exclude(master_key_id=active.key_id).values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return rewrapped
        for pk in ids:
            with transaction.atomic():
                row = WorkspaceDataKey.objects.select_for_update().select_related("workspace").get(pk=pk)
                if row.master_key_id == active.key_id:
                    continue
                public_id = str(row.workspace.public_id)
                dek = crypto.unwrap_data_key(
                    master_key_id=row.master_key_id,
                    wrapped=bytes(row.wrapped_key),
                    workspace_public_id=public_id,
                    ring=keyring(),
                )
                row.master_key_id, row.wrapped_key = crypto.wrap_data_key(
                    dek=dek, workspace_public_id=public_id, ring=keyring()
                )
                row.rotated_at = timezone.now()
                row.save(update_fields=["master_key_id", "wrapped_key", "rotated_at"])
                rewrapped += 1
