"""Two LOBs and a person for every role, for authorization matrices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.test import Client

from accounts.models import Lob, Membership, User
from tests.factories import AwsAccountFactory, LobFactory, MembershipFactory, UserFactory

PRINCIPALS = (
    "platform_admin",
    "lob_admin",
    "analyst",
    "viewer",
    "other_lob_member",
    "non_member",
    "anonymous",
)


@dataclass
class World:
    """lob-a (111111111111) and lob-b (222222222222) with one user per role."""

    lob_a: Lob
    lob_b: Lob
    users: dict[str, User | None]

    def user(self, principal: str) -> User | None:
        return self.users[principal]


def build_world() -> World:
    """Create the two LOBs and their people."""
    lob_a = LobFactory(slug="lob-a", aws_account=AwsAccountFactory(account_id="111111111111"))
    lob_b = LobFactory(slug="lob-b", aws_account=AwsAccountFactory(account_id="222222222222"))
    users: dict[str, User | None] = {
        "platform_admin": UserFactory(username="platform-admin", is_staff=True),
        "lob_admin": UserFactory(username="lob-a-admin"),
        "analyst": UserFactory(username="lob-a-analyst"),
        "viewer": UserFactory(username="lob-a-viewer"),
        "other_lob_member": UserFactory(username="lob-b-analyst"),
        "non_member": UserFactory(username="outsider"),
        "anonymous": None,
    }
    MembershipFactory(user=users["lob_admin"], lob=lob_a, role=Membership.Role.ADMIN)
    MembershipFactory(user=users["analyst"], lob=lob_a, role=Membership.Role.ANALYST)
    MembershipFactory(user=users["viewer"], lob=lob_a, role=Membership.Role.VIEWER)
    MembershipFactory(user=users["other_lob_member"], lob=lob_b, role=Membership.Role.ADMIN)
    return World(lob_a=lob_a, lob_b=lob_b, users=users)


def client_for(world: World, principal: str, **kwargs: Any) -> Client:
    """A browser client signed in as the principal (``anonymous``: not signed in)."""
    client = Client(**kwargs)
    user = world.user(principal)
    if user is not None:
        client.force_login(user)
    return client
