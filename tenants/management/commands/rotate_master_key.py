"""Re-wrap every workspace data key with the active master key.

Rotation procedure (docs/security.md):
  1. generate a new key:            python manage.py rotate_master_key --generate NEWID
  2. deploy with TURNPIKE_MASTER_KEY=<new> and TURNPIKE_MASTER_KEYS_RETIRED=<old>
  3. run:                           python manage.py rotate_master_key
  4. once it reports 0 left, drop the old key from TURNPIKE_MASTER_KEYS_RETIRED.
Provider secrets are not re-encrypted: only the small wrapped data keys change.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from contracts import crypto
from tenants.keyring import keyring
from tenants.models import WorkspaceDataKey
from tenants.services import master_key_rotate


class Command(BaseCommand):
    help = "Re-wrap workspace data keys with the active master key (TURNPIKE_MASTER_KEY)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--generate", metavar="KEY_ID", help="print a new master key with this id and exit")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["generate"] is not None:  # `--generate ""` must be refused, not run a rotation
            if ":" in opts["generate"] or not opts["generate"].strip():
                raise CommandError("the key id must be non-empty and must not contain ':'")
            self.stdout.write(crypto.generate_master_key(opts["generate"].strip()))
            return
        try:
            active, _ = keyring()
            count = master_key_rotate()
        except crypto.CryptoError as exc:
            raise CommandError(str(exc)) from exc
        left = WorkspaceDataKey.objects.exclude(master_key_id=active.key_id).count()
        self.stdout.write(f"re-wrapped {count} data key(s) with master key {active.key_id!r}; {left} left")
