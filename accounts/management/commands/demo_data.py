"""Load the local stack's demo data: users, LOBs, accounts, members, a listing and subscriptions."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import AwsAccount, Lob, Membership, User
from accounts.services import tenancy
from accounts.services.mapping_publication import mapping_outbox_drain
from accounts.services.users import Identity, user_sync_from_identity
from subscriptions.models import Endpoint, Listing, Subscription
from subscriptions.services.endpoints import endpoint_sync_soon

# (account id, account name, LOB slug, LOB name)
DEMO_LOBS = (
    ("111111111111", "LOB A production", "lob-a", "LOB A: Consumer analytics"),
    ("222222222222", "LOB B production", "lob-b", "LOB B: Risk models"),
)
# (username, LOB slug, role)
DEMO_MEMBERSHIPS = (
    ("user-lob-a", "lob-a", Membership.Role.ANALYST),
    ("user-lob-b", "lob-b", Membership.Role.ANALYST),
    ("lob-a-admin", "lob-a", Membership.Role.ADMIN),
)


class Command(BaseCommand):
    """``manage.py demo_data --stack var/devstack.json`` (idempotent; run by `make demo`)."""

    help = "Create the demo users, LOBs, AWS accounts and memberships of the local stack."

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
        users = {entry["username"]: self._user(entry) for entry in description["users"]}
        admin = users.get("admin")
        if admin is None or not admin.is_staff:
            raise CommandError("the stack has no platform admin named 'admin'")
        for account_id, account_name, slug, lob_name in DEMO_LOBS:
            account = AwsAccount.objects.filter(account_id=account_id).first()
            if account is None:
                account = tenancy.aws_account_create(
                    acting_user=admin,
                    account_id=account_id,
                    name=account_name,
                    default_region="us-east-1",
                    invoke_role_arn=f"arn:aws:iam::{account_id}:role/GatehouseInvokeRole",
                    results_bucket=f"gatehouse-results-{account_id}",
                )
            if not Lob.objects.filter(slug=slug).exists():
                tenancy.lob_create(acting_user=admin, slug=slug, name=lob_name, aws_account=account)
        for username, slug, role in DEMO_MEMBERSHIPS:
            lob = Lob.objects.get(slug=slug)
            if (
                username in users
                and not Membership.objects.filter(user=users[username], lob=lob).exists()
            ):
                tenancy.membership_create(
                    lob=lob, user=users[username], role=role, acting_user=admin
                )
        self._subscriptions(description["services"])
        if "sagemaker_studio" in description["services"]:
            self._studio(description["services"])
        published = mapping_outbox_drain()
        self.stdout.write(
            f"demo data ready: {len(users)} users, {Lob.objects.count()} LOBs; "
            f"DynamoDB publication: {published.delivered} delivered, {published.failed} failed"
        )

    def _subscriptions(self, services: dict[str, str]) -> None:
        """The Identity Transcoder listing; lob-a subscribed (active), lob-b's expired."""
        runtime, seller = services.get("sagemaker_runtime"), services.get("seller_token_service")
        if not runtime or not seller:
            return  # a stack without the seller side
        # Each account reaches SageMaker runtime through its endpoint override (in production a
        # VPC endpoint; here the stand-in).
        AwsAccount.objects.filter(account_id__in=[a for a, *_ in DEMO_LOBS]).update(
            sagemaker_runtime_endpoint_url=runtime
        )
        listing, _ = Listing.objects.get_or_create(
            product_code="identity-transcoder",
            defaults={
                "name": "Identity Transcoder",
                "seller_name": "Acme Identity",
                "description": (
                    "Privacy-safe identity transcoding: normalises emails, phone numbers and "
                    "mobile ad ids and returns pseudonymous ids keyed to your domain."
                ),
                "content_types": ["text/csv", "application/json", "application/jsonlines"],
                "token_service_url": seller,
                "seller_issuer": seller,
                "seller_jwks_url": f"{seller}/.well-known/jwks.json",
            },
        )
        today = timezone.localdate()
        plans = {
            "lob-a": (Subscription.Status.ACTIVE, None),
            "lob-b": (Subscription.Status.EXPIRED, today - timedelta(days=1)),
        }
        for slug, (status, ends_on) in plans.items():
            subscription, _ = Subscription.objects.get_or_create(
                lob=Lob.objects.get(slug=slug),
                listing=listing,
                defaults={
                    "status": status,
                    "starts_on": today - timedelta(days=30),
                    "ends_on": ends_on,
                },
            )
            endpoint, _ = Endpoint.objects.get_or_create(
                subscription=subscription,
                defaults={"name": f"identity-transcoder-{slug}", "region": "us-east-1"},
            )
            if endpoint.synced_at is None:
                # The worker picks this up when it starts: health shows at once, not in 5 min.
                endpoint_sync_soon(endpoint)

    def _studio(self, services: dict[str, str]) -> None:
        """Each demo account reaches SageMaker through the Studio stand-in, which mints Studio URLs
        (moto cannot) and passes every other SageMaker call to moto. Each account has one Studio
        domain, so the LOBs leave their domain id empty and the portal finds it with ListDomains.
        """
        studio = services["sagemaker_studio"]
        AwsAccount.objects.filter(account_id__in=[a for a, *_ in DEMO_LOBS]).update(
            sagemaker_endpoint_url=studio
        )

    def _user(self, entry: dict) -> User:
        # The local user pool lives in moto's memory and is created anew at every start, with new
        # subjects. A demo user kept in the database from an earlier run is the same person: move
        # them to this run's pool so they keep their memberships (real pools never change subs).
        User.objects.filter(username=entry["username"]).exclude(
            idp_issuer=settings.COGNITO_ISSUER, idp_subject=entry["sub"]
        ).update(idp_issuer=settings.COGNITO_ISSUER, idp_subject=entry["sub"])
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
        return user
