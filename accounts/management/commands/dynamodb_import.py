"""Load an existing deployment's DynamoDB mapping tables into the portal."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import audit_record
from accounts.models import AuditEvent, Membership
from accounts.services.mapping_publication import (
    MappingTableError,
    mapping_import,
    mapping_tables_description,
)

CHANNEL = "manage.py dynamodb_import"


class Command(BaseCommand):
    """``manage.py dynamodb_import --results-bucket B [--default-role R] [--region R]``."""

    help = (
        "Create the AWS accounts, LOBs, placeholder users and memberships found in "
        "users-map-table and lobs-map-table (idempotent; existing records are never changed)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--results-bucket", required=True, help="Results bucket of the accounts created."
        )
        parser.add_argument(
            "--default-role",
            default=Membership.Role.ANALYST,
            choices=Membership.Role.values,
            help="Role of the memberships created (default: analyst).",
        )
        parser.add_argument(
            "--region", default=None, help="Default region of the accounts created (AWS_REGION)."
        )
        parser.add_argument(
            "--invoke-role-name",
            default="GatehouseInvokeRole",
            help="Role name in the invoke role ARN of the accounts created.",
        )

    def handle(
        self,
        *args: object,
        results_bucket: str,
        default_role: str,
        region: str | None,
        invoke_role_name: str,
        **options: object,
    ) -> None:
        try:
            where = mapping_tables_description()
            result = mapping_import(
                default_role=default_role,
                default_region=region or settings.AWS_REGION,
                invoke_role_name=invoke_role_name,
                results_bucket=results_bucket,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except (MappingTableError, ImproperlyConfigured) as exc:
            audit_record(
                action="mapping.imported",
                outcome=AuditEvent.Outcome.FAILURE,
                actor_username=CHANNEL,
                target_type="dynamodb",
                reason=getattr(getattr(exc, "error", None), "code", "configuration"),
                detail={"channel": CHANNEL, "error": str(exc)[:500]},
            )
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Imported from {where}")
        self.stdout.write(f"AWS accounts created: {result.accounts_created}")
        self.stdout.write(f"LOBs created: {result.lobs_created}")
        self.stdout.write(f"Users created: {result.users_created}")
        self.stdout.write(f"Memberships created: {result.memberships_created}")
        self.stdout.write(f"Conflicts: {len(result.conflicts)}")
        for conflict in result.conflicts:
            self.stdout.write(f"  {conflict}")
