"""Load the demo data of the local stack: the demo users of the local Cognito pool."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services import Identity, user_sync_from_identity


class Command(BaseCommand):
    """``manage.py demo_data --stack var/devstack.json`` (idempotent; run by `make demo`)."""

    help = "Create the portal users of the local stack's demo Cognito users (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stack", default=str(settings.BASE_DIR / "var" / "devstack.json"))

    def handle(self, *args: object, stack: str, **options: object) -> None:
        try:
            description = json.loads(Path(stack).read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the stack description {stack}: {exc}") from exc
        if description["cognito"]["issuer"] != settings.COGNITO_ISSUER:
            raise CommandError(
                "the stack's user pool is not the one configured here; "
                "load var/devstack.env into the environment first"
            )
        for entry in description["users"]:
            user = user_sync_from_identity(
                identity=Identity(
                    subject=entry["sub"],
                    username=entry["username"],
                    groups=tuple(entry["groups"]),
                    email=entry["email"],
                    name=entry.get("name"),
                ),
                channel="demo-data",
            )
            self.stdout.write(f"demo user {user.username} (platform admin: {user.is_staff})")
