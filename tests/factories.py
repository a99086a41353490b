"""factory_boy factories for the portal's models (no fixture files)."""

from __future__ import annotations

import factory

from accounts.models import AwsAccount, Lob, Membership, User
from subscriptions.models import Endpoint, Invocation, Job, Listing, Subscription


class UserFactory(factory.django.DjangoModelFactory):
    """A user as created by sign-in: issuer + subject, no usable password."""

    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user-{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@gatehouse.example")
    idp_issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_test"
    idp_subject = factory.Sequence(lambda n: f"sub-{n:08d}")
    password = factory.django.Password(None)


class AwsAccountFactory(factory.django.DjangoModelFactory):
    """An AWS account with a well-formed invoke role in that account."""

    class Meta:
        model = AwsAccount
        django_get_or_create = ("account_id",)

    account_id = factory.Sequence(lambda n: f"{100000000000 + n:012d}")
    name = factory.LazyAttribute(lambda a: f"Account {a.account_id}")
    default_region = "us-east-1"
    invoke_role_arn = factory.LazyAttribute(
        lambda a: f"arn:aws:iam::{a.account_id}:role/GatehouseInvokeRole"
    )
    results_bucket = factory.LazyAttribute(lambda a: f"gatehouse-results-{a.account_id}")


class LobFactory(factory.django.DjangoModelFactory):
    """A LOB with its own AWS account."""

    class Meta:
        model = Lob
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"lob-{n}")
    name = factory.LazyAttribute(lambda lob: lob.slug.replace("-", " ").title())
    aws_account = factory.SubFactory(AwsAccountFactory)


class MembershipFactory(factory.django.DjangoModelFactory):
    """A user's role in a LOB."""

    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    lob = factory.SubFactory(LobFactory)
    role = Membership.Role.ANALYST


# --- Subscriptions --------------------------------------------------------------------------------


class ListingFactory(factory.django.DjangoModelFactory):
    """A Marketplace listing whose seller's token service is an HTTPS URL."""

    class Meta:
        model = Listing
        django_get_or_create = ("product_code",)

    product_code = factory.Sequence(lambda n: f"product-{n}")
    name = factory.LazyAttribute(lambda listing: listing.product_code.replace("-", " ").title())
    seller_name = "Acme Identity"
    content_types = factory.LazyFunction(
        lambda: ["text/csv", "application/json", "application/jsonlines"]
    )
    token_service_url = "https://seller.example"
    seller_issuer = "https://seller.example"
    seller_jwks_url = "https://seller.example/.well-known/jwks.json"


class SubscriptionFactory(factory.django.DjangoModelFactory):
    """An active subscription of a LOB to a listing, with no end date."""

    class Meta:
        model = Subscription

    lob = factory.SubFactory(LobFactory)
    listing = factory.SubFactory(ListingFactory)
    status = Subscription.Status.ACTIVE


class EndpointFactory(factory.django.DjangoModelFactory):
    """The SageMaker endpoint of a subscription, in its LOB account's region."""

    class Meta:
        model = Endpoint

    subscription = factory.SubFactory(SubscriptionFactory)
    name = factory.LazyAttribute(
        lambda e: f"{e.subscription.listing.product_code}-{e.subscription.lob.slug}"
    )
    region = factory.LazyAttribute(lambda e: e.subscription.lob.aws_account.default_region)


class InvocationFactory(factory.django.DjangoModelFactory):
    """A recorded call through the proxy path."""

    class Meta:
        model = Invocation

    subscription = factory.SubFactory(SubscriptionFactory)
    outcome = Invocation.OUTCOME_OK
    bytes_in = 1000
    bytes_out = 800
    records = 10


class JobFactory(factory.django.DjangoModelFactory):
    """A job row of three CSV records in one chunk, its input named under the LOB's prefix (no
    object behind it: for pages and refusals, not for running)."""

    class Meta:
        model = Job

    subscription = factory.SubFactory(SubscriptionFactory)
    content_type = "text/csv"
    input_uri = factory.LazyAttribute(
        lambda job: (
            f"s3://{job.subscription.lob.aws_account.results_bucket}/"
            f"gatehouse/{job.subscription.lob.slug}/jobs/input"
        )
    )
    records_total = 3
    chunks_total = 1
