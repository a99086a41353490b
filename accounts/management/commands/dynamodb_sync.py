"""Compare the DynamoDB mapping tables with the portal, and repair them."""

from __future__ import annotations

import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import audit_record
from accounts.models import AuditEvent
from accounts.services.mapping_publication import (
    MappingTableError,
    mapping_drift,
    mapping_repair,
    mapping_tables_description,
)

CHANNEL = "manage.py dynamodb_sync"


class Command(BaseCommand):
    """``manage.py dynamodb_sync --check`` (exit 1 on drift, 2 on errors) or ``--apply``."""

    help = (
        "Compare users-map-table and lobs-map-table with the portal's memberships and LOBs: "
        "--check lists the differences (exit code 1 when there are any), --apply repairs them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--check", action="store_true", help="List differences; exit 1 if any.")
        mode.add_argument("--apply", action="store_true", help="Write the tables to match.")

    def handle(self, *args: object, check: bool, apply: bool, **options: object) -> None:
        action = "mapping.sync_checked" if check else "mapping.sync_repaired"
        try:
            where = mapping_tables_description()
            drift = mapping_drift()
            lines = drift.lines()
            repaired = mapping_repair(drift=drift) if apply else 0
        except (MappingTableError, ImproperlyConfigured) as exc:
            audit_record(
                action=action,
                outcome=AuditEvent.Outcome.FAILURE,
                actor_username=CHANNEL,
                target_type="dynamodb",
                reason=getattr(getattr(exc, "error", None), "code", "configuration"),
                detail={"channel": CHANNEL, "error": str(exc)[:500]},
            )
            # 2, like diff: 1 means "differences found", 2 means the check could not run.
            raise CommandError(str(exc), returncode=2) from exc
        self.stdout.write(f"Tables: {where}")
        for line in lines:
            self.stdout.write(line)
        if check:
            audit_record(
                action=action,
                outcome=AuditEvent.Outcome.SUCCESS,
                actor_username=CHANNEL,
                target_type="dynamodb",
                detail={"channel": CHANNEL, "clean": drift.clean, "differences": len(lines)},
            )
            if not drift.clean:
                self.stdout.write(f"{len(lines)} difference(s); run with --apply to repair.")
                self.stdout.flush()
                sys.exit(1)
            self.stdout.write("In sync: no differences.")
            return
        # mapping_repair wrote the mapping.sync_repaired audit event.
        if drift.clean:
            self.stdout.write("In sync: nothing to repair.")
        else:
            self.stdout.write(f"Repaired {repaired} item(s).")
