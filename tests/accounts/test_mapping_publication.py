"""Publishing user→LOB and LOB→account mappings to DynamoDB, against the suite's moto server.

Every table here is a real DynamoDB table in moto, reached over HTTP through the AWS gateway.
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from accounts import tasks
from accounts.models import AuditEvent, AwsAccount, Lob, MappingOutbox, Membership, User
from accounts.services import mapping_publication, tenancy
from accounts.services.mapping_publication import (
    DrainResult,
    desired_lob_item,
    desired_user_item,
    drain,
    mapping_drift,
    mapping_import,
    mapping_outbox_drain,
    mapping_outbox_enqueue,
    mapping_outbox_purge,
    marshal_item,
    repair,
    unmarshal_item,
)
from portal import aws_gateway
from portal.aws_gateway import AccountAccess
from portal.celery import app as celery_app

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
TABLES_ACCOUNT = "333333333333"
CLOSED_PORT_URL = "http://127.0.0.1:9"  # the discard port: nothing listens


@pytest.fixture(autouse=True)
def moto_aws(moto_server: str, settings, monkeypatch) -> Iterator[str]:
    """The portal's credentials are moto's dummies and every AWS endpoint is moto's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = REGION
    settings.AWS_MAX_ATTEMPTS = 1
    settings.DYNAMODB_PUBLICATION_ENABLED = True
    settings.DYNAMODB_REGION = REGION
    settings.DYNAMODB_ROLE_ARN = ""
    settings.DYNAMODB_EXTERNAL_ID = ""
    settings.DYNAMODB_ENDPOINT_URL = ""
    aws_gateway.reset_caches()
    yield moto_server
    aws_gateway.reset_caches()


@dataclass
class Tables:
    """The two mapping tables of one test, and a client to look into them."""

    users: str
    lobs: str
    client: Any

    def get(self, table: str, key: str) -> dict | None:
        answer = self.client.get_item(TableName=table, Key={"PK": {"S": key}}, ConsistentRead=True)
        return unmarshal_item(answer["Item"]) if "Item" in answer else None

    def user(self, username: str) -> dict | None:
        return self.get(self.users, username)

    def lob(self, slug: str) -> dict | None:
        return self.get(self.lobs, slug)

    def put_user(self, item: dict) -> None:
        self.client.put_item(TableName=self.users, Item=marshal_item(item))

    def put_lob(self, item: dict) -> None:
        self.client.put_item(TableName=self.lobs, Item=marshal_item(item))

    def scan(self, table: str) -> dict[str, dict]:
        items = self.client.scan(TableName=table, ConsistentRead=True)["Items"]
        return {item["PK"]["S"]: unmarshal_item(item) for item in items}


def create_tables(dynamodb, settings) -> Tables:
    """Both tables (PK string hash key), uniquely named, and the settings pointing at them."""
    suffix = uuid.uuid4().hex[:8]
    tables = Tables(users=f"users-map-{suffix}", lobs=f"lobs-map-{suffix}", client=dynamodb)
    for name in (tables.users, tables.lobs):
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    settings.DYNAMODB_USERS_TABLE = tables.users
    settings.DYNAMODB_LOBS_TABLE = tables.lobs
    return tables


@pytest.fixture
def tables(settings) -> Iterator[Tables]:
    """Mapping tables in the portal's own account."""
    dynamodb = aws_gateway.client("dynamodb", region=REGION)
    made = create_tables(dynamodb, settings)
    yield made
    for name in (made.users, made.lobs):
        dynamodb.delete_table(TableName=name)


@pytest.fixture
def drain_on_enqueue(monkeypatch) -> list[DrainResult]:
    """The after-commit enqueue drains synchronously instead of going through Redis."""
    results: list[DrainResult] = []
    monkeypatch.setattr(
        tasks.publish_mappings, "delay", lambda: results.append(mapping_outbox_drain())
    )
    return results


# --- Building portal data with the ORM ------------------------------------------------------------
def account(account_id: str = ACCOUNT_A) -> AwsAccount:
    existing = AwsAccount.objects.filter(account_id=account_id).first()
    return existing or AwsAccount.objects.create(
        account_id=account_id,
        name=f"Account {account_id}",
        invoke_role_arn=f"arn:aws:iam::{account_id}:role/GatehouseInvokeRole",
        results_bucket=f"results-{account_id}",
    )


def lob(slug: str, account_id: str = ACCOUNT_A, **fields) -> Lob:
    return Lob.objects.create(slug=slug, name=slug, aws_account=account(account_id), **fields)


def user(username: str, **fields) -> User:
    return User.objects.create(username=username, idp_subject=f"sub-{username}", **fields)


def member(person: User, of: Lob, *, created_at: dt.datetime | None = None) -> Membership:
    membership = Membership.objects.create(user=person, lob=of, role=Membership.Role.ANALYST)
    if created_at is not None:
        Membership.objects.filter(pk=membership.pk).update(created_at=created_at)
    return membership


def outbox(kind: str, key: str) -> list[MappingOutbox]:
    return list(MappingOutbox.objects.filter(kind=kind, key=key).order_by("id"))


def make_all_due() -> None:
    MappingOutbox.objects.filter(delivered_at__isnull=True).update(next_attempt_at=timezone.now())


# --- Publication after commit ---------------------------------------------------------------------
def test_membership_change_publishes_user_item_after_commit(
    tables: Tables, drain_on_enqueue, django_capture_on_commit_callbacks
) -> None:
    alice = user("alice")
    lob_a = lob("lob-a")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        member(alice, lob_a)
        mapping_outbox_enqueue(kind="user", key="alice")
        mapping_outbox_enqueue(kind="lob", key="lob-a")
        assert tables.user("alice") is None  # nothing is published before the commit

    assert len(callbacks) == 1  # one drain per transaction, however many rows it enqueued
    assert drain_on_enqueue == [DrainResult(delivered=2, failed=0, pending=0)]
    assert tables.user("alice") == {"PK": "alice", "LOB": "lob-a", "LOBS": ["lob-a"]}
    assert tables.lob("lob-a") == {"PK": "lob-a", "ACCOUNT_ID": ACCOUNT_A}
    assert all(row.delivered_at is not None for row in MappingOutbox.objects.all())


def test_rolled_back_change_enqueues_nothing(
    tables: Tables, drain_on_enqueue, django_capture_on_commit_callbacks
) -> None:
    alice = user("alice")
    lob_a = lob("lob-a")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            member(alice, lob_a)
            mapping_outbox_enqueue(kind="user", key="alice")
            raise RuntimeError("the change failed")

    assert callbacks == []
    assert not MappingOutbox.objects.exists()
    assert tables.user("alice") is None


def test_user_in_two_lobs_gets_earliest_membership_as_lob(tables: Tables) -> None:
    alice = user("alice")
    now = timezone.now()
    # Created later but dated earlier: the earliest membership wins, not the first slug or id.
    member(alice, lob("lob-a"), created_at=now)
    member(alice, lob("lob-b", ACCOUNT_B), created_at=now - dt.timedelta(days=1))
    mapping_outbox_enqueue(kind="user", key="alice")

    result = mapping_outbox_drain()

    assert result == DrainResult(delivered=1, failed=0, pending=0)
    assert tables.user("alice") == {"PK": "alice", "LOB": "lob-b", "LOBS": ["lob-b", "lob-a"]}


def test_equal_creation_times_fall_back_to_membership_order(tables: Tables) -> None:
    alice = user("alice")
    same_time = timezone.now()
    member(alice, lob("lob-z"), created_at=same_time)
    member(alice, lob("lob-a"), created_at=same_time)

    assert desired_user_item(username="alice") == {
        "PK": "alice",
        "LOB": "lob-z",
        "LOBS": ["lob-z", "lob-a"],
    }


def test_removing_last_membership_deletes_user_item(tables: Tables) -> None:
    alice = user("alice")
    membership = member(alice, lob("lob-a"))
    mapping_outbox_enqueue(kind="user", key="alice")
    mapping_outbox_drain()
    assert tables.user("alice") is not None

    membership.delete()
    mapping_outbox_enqueue(kind="user", key="alice")
    result = mapping_outbox_drain()

    assert result.delivered == 1
    assert tables.user("alice") is None
    assert desired_user_item(username="alice") is None


def test_removing_one_of_two_memberships_promotes_the_next_lob(tables: Tables) -> None:
    alice = user("alice")
    first = member(alice, lob("lob-a"), created_at=timezone.now() - dt.timedelta(hours=1))
    member(alice, lob("lob-b"))
    first.delete()
    mapping_outbox_enqueue(kind="user", key="alice")

    mapping_outbox_drain()

    assert tables.user("alice") == {"PK": "alice", "LOB": "lob-b", "LOBS": ["lob-b"]}


def test_lob_moved_to_another_account_updates_account_id(tables: Tables) -> None:
    lob_a = lob("lob-a", ACCOUNT_A)
    mapping_outbox_enqueue(kind="lob", key="lob-a")
    mapping_outbox_drain()
    assert tables.lob("lob-a") == {"PK": "lob-a", "ACCOUNT_ID": ACCOUNT_A}

    lob_a.aws_account = account(ACCOUNT_B)
    lob_a.save()
    mapping_outbox_enqueue(kind="lob", key="lob-a")
    mapping_outbox_drain()

    assert tables.lob("lob-a") == {"PK": "lob-a", "ACCOUNT_ID": ACCOUNT_B}


def test_inactive_lob_is_removed_from_both_tables(tables: Tables) -> None:
    alice, bob = user("alice"), user("bob")
    lob_a, lob_b = lob("lob-a"), lob("lob-b")
    member(alice, lob_a, created_at=timezone.now() - dt.timedelta(hours=1))
    member(alice, lob_b)
    member(bob, lob_a)
    for kind, key in (("lob", "lob-a"), ("user", "alice"), ("user", "bob")):
        mapping_outbox_enqueue(kind=kind, key=key)
    mapping_outbox_drain()
    assert tables.user("alice")["LOB"] == "lob-a"

    lob_a.is_active = False
    lob_a.save()
    for kind, key in (("lob", "lob-a"), ("user", "alice"), ("user", "bob")):
        mapping_outbox_enqueue(kind=kind, key=key)
    result = mapping_outbox_drain()

    assert result == DrainResult(delivered=3, failed=0, pending=0)
    assert tables.lob("lob-a") is None
    assert desired_lob_item(slug="lob-a") is None
    assert tables.user("alice") == {"PK": "alice", "LOB": "lob-b", "LOBS": ["lob-b"]}
    assert tables.user("bob") is None


def test_deactivated_user_item_is_deleted(tables: Tables) -> None:
    alice = user("alice")
    member(alice, lob("lob-a"))
    mapping_outbox_enqueue(kind="user", key="alice")
    mapping_outbox_drain()

    alice.is_active = False
    alice.save()
    mapping_outbox_enqueue(kind="user", key="alice")
    mapping_outbox_drain()

    assert tables.user("alice") is None


def test_rows_of_the_same_key_are_merged_into_one_write(tables: Tables, monkeypatch) -> None:
    alice = user("alice")
    member(alice, lob("lob-a"))
    for _ in range(3):
        mapping_outbox_enqueue(kind="user", key="alice")
    writes: list[tuple[str, dict | None]] = []
    real_write = drain._write

    def spy(dynamodb, *, table, key, item):
        writes.append((key, item))
        real_write(dynamodb, table=table, key=key, item=item)

    monkeypatch.setattr(drain, "_write", spy)

    result = mapping_outbox_drain()

    assert result == DrainResult(delivered=1, failed=0, pending=0)
    assert writes == [("alice", {"PK": "alice", "LOB": "lob-a", "LOBS": ["lob-a"]})]
    assert all(row.delivered_at is not None for row in outbox("user", "alice"))
    assert mapping_outbox_drain() == DrainResult(delivered=0, failed=0, pending=0)


def test_item_is_computed_when_drained_not_when_enqueued(tables: Tables) -> None:
    alice = user("alice")
    membership = member(alice, lob("lob-a"))
    mapping_outbox_enqueue(kind="user", key="alice")
    membership.lob = lob("lob-b")  # changed again before the drain ran
    membership.save()

    mapping_outbox_drain()

    assert tables.user("alice") == {"PK": "alice", "LOB": "lob-b", "LOBS": ["lob-b"]}


def test_drain_respects_the_limit_and_leaves_the_rest_due(tables: Tables) -> None:
    for slug in ("lob-a", "lob-b", "lob-c"):
        lob(slug)
        mapping_outbox_enqueue(kind="lob", key=slug)

    first = mapping_outbox_drain(limit=2)
    second = mapping_outbox_drain(limit=2)

    assert first == DrainResult(delivered=2, failed=0, pending=1)
    assert second == DrainResult(delivered=1, failed=0, pending=0)
    assert set(tables.scan(tables.lobs)) == {"lob-a", "lob-b", "lob-c"}


# --- Nothing is lost ------------------------------------------------------------------------------
def test_unreachable_dynamodb_keeps_rows_pending_then_delivers_them(
    tables: Tables, settings, caplog
) -> None:
    alice = user("alice")
    member(alice, lob("lob-a"))
    mapping_outbox_enqueue(kind="user", key="alice")
    mapping_outbox_enqueue(kind="lob", key="lob-a")
    settings.DYNAMODB_ENDPOINT_URL = CLOSED_PORT_URL
    before = timezone.now()

    result = mapping_outbox_drain()

    assert result == DrainResult(delivered=0, failed=2, pending=2)
    rows = list(MappingOutbox.objects.all())
    for row in rows:
        assert row.delivered_at is None
        assert row.attempts == 1
        assert row.last_error.startswith("aws_unreachable: AWS could not be reached at 127.0.0.1:9")
        assert "testing" not in row.last_error
        # First retry after 5 s with jitter: between half of it and all of it.
        assert before + dt.timedelta(seconds=2) <= row.next_attempt_at
        assert row.next_attempt_at <= timezone.now() + dt.timedelta(seconds=5)
    assert "DynamoDB publication of user alice failed" in caplog.text

    # Not due yet: a drain right now leaves the rows alone.
    assert mapping_outbox_drain() == DrainResult(delivered=0, failed=0, pending=2)

    make_all_due()
    mapping_outbox_drain()
    assert {row.attempts for row in MappingOutbox.objects.all()} == {2}

    settings.DYNAMODB_ENDPOINT_URL = ""
    make_all_due()
    result = mapping_outbox_drain()

    assert result == DrainResult(delivered=2, failed=0, pending=0)
    assert tables.user("alice") == {"PK": "alice", "LOB": "lob-a", "LOBS": ["lob-a"]}
    assert tables.lob("lob-a") == {"PK": "lob-a", "ACCOUNT_ID": ACCOUNT_A}
    assert all(row.last_error == "" for row in MappingOutbox.objects.all())


def test_unreachable_table_defers_the_whole_batch_after_one_call(
    tables: Tables, settings, monkeypatch
) -> None:
    for slug in ("lob-a", "lob-b", "lob-c"):
        lob(slug)
        mapping_outbox_enqueue(kind="lob", key=slug)
    settings.DYNAMODB_ENDPOINT_URL = CLOSED_PORT_URL
    calls: list[str] = []
    real_write = drain._write

    def spy(dynamodb, *, table, key, item):
        calls.append(key)
        real_write(dynamodb, table=table, key=key, item=item)

    monkeypatch.setattr(drain, "_write", spy)

    result = mapping_outbox_drain()

    assert result == DrainResult(delivered=0, failed=3, pending=3)
    assert calls == ["lob-a"]  # the other keys are deferred with the same error, not tried
    assert set(MappingOutbox.objects.values_list("attempts", flat=True)) == {1}
    assert all(row.last_error.startswith("aws_unreachable") for row in MappingOutbox.objects.all())


def test_missing_table_is_recorded_on_the_row(tables: Tables, settings) -> None:
    lob("lob-a")
    mapping_outbox_enqueue(kind="lob", key="lob-a")
    settings.DYNAMODB_LOBS_TABLE = "no-such-table"

    result = mapping_outbox_drain()

    assert result.failed == 1
    (row,) = outbox("lob", "lob-a")
    assert row.last_error.startswith("ResourceNotFoundException:")
    assert row.delivered_at is None


def test_backoff_grows_and_is_capped() -> None:
    delays = [drain._backoff(attempts).total_seconds() for attempts in (1, 2, 3, 20)]

    assert 2.5 <= delays[0] <= 5
    assert 5 <= delays[1] <= 10
    assert 10 <= delays[2] <= 20
    assert 450 <= delays[3] <= 900


def test_enqueue_with_broker_unreachable_keeps_the_transaction(
    tables: Tables, monkeypatch, django_capture_on_commit_callbacks, caplog
) -> None:
    """The real Celery publish path, with a broker URL where nothing listens."""
    unreachable = celery_app.connection_for_write("redis://127.0.0.1:9/0")
    attempts: list[bool] = []

    def delay_to_unreachable_broker():
        attempts.append(True)
        return tasks.publish_mappings.apply_async(connection=unreachable)

    monkeypatch.setattr(tasks.publish_mappings, "delay", delay_to_unreachable_broker)
    alice = user("alice")

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        member(alice, lob("lob-a"))
        mapping_outbox_enqueue(kind="user", key="alice")

    assert attempts == [True]
    assert "Could not enqueue the DynamoDB publication (OperationalError" in caplog.text
    assert Membership.objects.filter(user=alice).exists()
    (row,) = outbox("user", "alice")
    assert row.delivered_at is None
    # What beat's periodic drain does later:
    tasks.publish_mappings.apply()
    row.refresh_from_db()
    assert row.delivered_at is not None
    assert tables.user("alice") == {"PK": "alice", "LOB": "lob-a", "LOBS": ["lob-a"]}


def test_publication_disabled_records_nothing(settings, tables: Tables) -> None:
    settings.DYNAMODB_PUBLICATION_ENABLED = False
    member(user("alice"), lob("lob-a"))

    mapping_outbox_enqueue(kind="user", key="alice")

    assert not MappingOutbox.objects.exists()
    assert mapping_outbox_drain() == DrainResult(delivered=0, failed=0, pending=0)


def test_enqueue_refuses_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        mapping_outbox_enqueue(kind="account", key="111111111111")


def test_purge_deletes_only_old_delivered_rows() -> None:
    old, recent, _pending = (MappingOutbox.objects.create(kind="user", key=k) for k in "abc")
    MappingOutbox.objects.filter(pk=old.pk).update(
        delivered_at=timezone.now() - dt.timedelta(days=8)
    )
    MappingOutbox.objects.filter(pk=recent.pk).update(delivered_at=timezone.now())

    deleted = mapping_outbox_purge()

    assert deleted == 1
    assert set(MappingOutbox.objects.values_list("key", flat=True)) == {"b", "c"}


@pytest.mark.skipif(
    not connection.features.has_select_for_update_skip_locked,
    reason="needs PostgreSQL (SELECT ... FOR UPDATE SKIP LOCKED); CI runs it on PostgreSQL",
)
@pytest.mark.django_db(transaction=True)
def test_key_locked_by_another_drain_is_skipped(tables: Tables) -> None:
    """Two drains never write the same key at once (needs SKIP LOCKED: PostgreSQL)."""
    for slug in ("lob-a", "lob-b"):
        lob(slug)
        mapping_outbox_enqueue(kind="lob", key=slug)
    locked, release = threading.Event(), threading.Event()

    def other_drain_holding_lob_a() -> None:
        try:
            with transaction.atomic():
                list(MappingOutbox.objects.select_for_update().filter(key="lob-a"))
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    other = threading.Thread(target=other_drain_holding_lob_a)
    other.start()
    assert locked.wait(10)
    try:
        result = mapping_outbox_drain()
    finally:
        release.set()
        other.join(10)

    assert result == DrainResult(delivered=1, failed=0, pending=1)
    assert tables.lob("lob-a") is None
    assert tables.lob("lob-b") == {"PK": "lob-b", "ACCOUNT_ID": ACCOUNT_A}
    assert mapping_outbox_drain() == DrainResult(delivered=1, failed=0, pending=0)
    assert tables.lob("lob-a") == {"PK": "lob-a", "ACCOUNT_ID": ACCOUNT_A}


# --- Tables in another account --------------------------------------------------------------------
def test_tables_in_another_account_are_reached_through_the_role(settings) -> None:
    role_arn = f"arn:aws:iam::{TABLES_ACCOUNT}:role/GatehouseMappingWriter"
    tables_access = AccountAccess(account_id=TABLES_ACCOUNT, region=REGION, role_arn=role_arn)
    other_account = aws_gateway.client(
        "dynamodb", access=tables_access, session_name="gatehouse-test-setup"
    )
    tables = create_tables(other_account, settings)
    settings.DYNAMODB_ROLE_ARN = role_arn
    settings.DYNAMODB_EXTERNAL_ID = "shared-external-id"
    member(user("alice"), lob("lob-a"))
    mapping_outbox_enqueue(kind="user", key="alice")

    result = mapping_outbox_drain()

    assert result.delivered == 1
    assert tables.user("alice") == {"PK": "alice", "LOB": "lob-a", "LOBS": ["lob-a"]}
    # The portal's own account has no such table: the write went to the role's account.
    own_account_tables = aws_gateway.client("dynamodb", region=REGION).list_tables()
    assert tables.users not in own_account_tables["TableNames"]


# --- The task and its schedule --------------------------------------------------------------------
def test_publish_task_drains_and_is_scheduled_every_30_seconds(tables: Tables, settings) -> None:
    member(user("alice"), lob("lob-a"))
    mapping_outbox_enqueue(kind="user", key="alice")

    tasks.publish_mappings.apply()

    assert tables.user("alice") is not None
    task = tasks.publish_mappings
    assert task.name == "accounts.publish_mappings"
    assert task.acks_late is True
    assert task.ignore_result is True
    assert task.soft_time_limit < task.time_limit
    schedule = settings.CELERY_BEAT_SCHEDULE["publish-mappings"]
    assert schedule["task"] == "accounts.publish_mappings"
    assert schedule["schedule"] == 30.0


# --- Drift check and repair -----------------------------------------------------------------------
def run_sync(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("dynamodb_sync", *args, stdout=out)
    except SystemExit as exit_:
        return int(exit_.code), out.getvalue()
    return 0, out.getvalue()


def test_sync_check_reports_drift_and_apply_repairs_it(tables: Tables) -> None:
    alice, bob = user("alice"), user("bob")
    member(alice, lob("lob-a"))
    member(bob, lob("lob-b", ACCOUNT_B))
    # bob's item is stale, ghost is not in the portal, lob-b points at the wrong account;
    # alice and lob-a are missing from the tables.
    tables.put_user({"PK": "bob", "LOB": "lob-a", "LOBS": ["lob-a"]})
    tables.put_user({"PK": "ghost", "LOB": "lob-a"})
    tables.put_lob({"PK": "lob-b", "ACCOUNT_ID": ACCOUNT_A})

    code, output = run_sync("--check")

    assert code == 1
    lines = output.splitlines()
    assert f"{tables.users}: missing alice (LOB=lob-a, LOBS=lob-a)" in lines
    assert f"{tables.users}: unexpected ghost (LOB=lob-a)" in lines
    assert (
        f"{tables.users}: different bob (LOB=lob-a, LOBS=lob-a; expected LOB=lob-b, LOBS=lob-b)"
        in lines
    )
    assert f"{tables.lobs}: missing lob-a (ACCOUNT_ID={ACCOUNT_A})" in lines
    assert (
        f"{tables.lobs}: different lob-b (ACCOUNT_ID={ACCOUNT_A}; expected ACCOUNT_ID={ACCOUNT_B})"
        in lines
    )
    checked = AuditEvent.objects.get(action="mapping.sync_checked")
    assert checked.detail["clean"] is False

    code, output = run_sync("--apply")

    assert code == 0
    assert "Repaired 5 item(s)." in output
    assert tables.scan(tables.users) == {
        "alice": {"PK": "alice", "LOB": "lob-a", "LOBS": ["lob-a"]},
        "bob": {"PK": "bob", "LOB": "lob-b", "LOBS": ["lob-b"]},
    }
    assert tables.scan(tables.lobs) == {
        "lob-a": {"PK": "lob-a", "ACCOUNT_ID": ACCOUNT_A},
        "lob-b": {"PK": "lob-b", "ACCOUNT_ID": ACCOUNT_B},
    }
    repaired = AuditEvent.objects.get(action="mapping.sync_repaired")
    assert repaired.detail["put"] == 4
    assert repaired.detail["deleted"] == 1

    code, output = run_sync("--check")

    assert code == 0
    assert "In sync: no differences." in output
    assert mapping_drift().clean


def test_drift_ignores_attributes_the_portal_does_not_manage(tables: Tables) -> None:
    lob("lob-a")
    tables.put_lob({"PK": "lob-a", "ACCOUNT_ID": ACCOUNT_A, "OWNER": "team-a"})

    drift = mapping_drift()

    assert drift.lobs.clean
    assert [entry.key for entry in drift.users.missing] == []


def test_drift_scan_reads_every_page(tables: Tables) -> None:
    big = "x" * 300_000  # a few of these pass moto's 1 MB page limit
    for index in range(8):
        tables.put_user({"PK": f"stranger-{index}", "LOB": "lob-a", "NOTE": big})

    drift = mapping_drift()

    assert sorted(entry.key for entry in drift.users.unexpected) == [
        f"stranger-{index}" for index in range(8)
    ]


def test_sync_needs_exactly_one_mode() -> None:
    with pytest.raises(CommandError):
        call_command("dynamodb_sync")
    with pytest.raises(CommandError):
        call_command("dynamodb_sync", "--check", "--apply")


def test_sync_names_the_missing_table_and_where_it_looked(settings) -> None:
    settings.DYNAMODB_USERS_TABLE = "users-map-table-missing"
    settings.DYNAMODB_LOBS_TABLE = "lobs-map-table-missing"

    with pytest.raises(CommandError) as raised:
        call_command("dynamodb_sync", "--check", stdout=io.StringIO())

    message = str(raised.value)
    assert "users-map-table-missing was not found in the portal's own AWS account" in message
    assert f"region {REGION}" in message
    failure = AuditEvent.objects.get(action="mapping.sync_checked")
    assert failure.outcome == AuditEvent.Outcome.FAILURE
    assert failure.reason == "aws_not_found"


# --- Import ---------------------------------------------------------------------------------------
def test_import_creates_accounts_lobs_placeholder_users_and_memberships(tables: Tables) -> None:
    tables.put_lob({"PK": "lob-a", "ACCOUNT_ID": ACCOUNT_A})
    tables.put_lob({"PK": "lob-b", "ACCOUNT_ID": ACCOUNT_B})
    tables.put_lob({"PK": "lob-c", "ACCOUNT_ID": ACCOUNT_B})
    # carol's LOB comes first even though LOBS lists it second.
    tables.put_user({"PK": "carol", "LOB": "lob-b", "LOBS": ["lob-a", "lob-b"]})
    tables.put_user({"PK": "dave", "LOB": "lob-c"})  # the reference shape: no LOBS
    out = io.StringIO()

    call_command("dynamodb_import", "--results-bucket", "imported-results", stdout=out)

    output = out.getvalue()
    assert "AWS accounts created: 2" in output
    assert "LOBs created: 3" in output
    assert "Users created: 2" in output
    assert "Memberships created: 3" in output
    assert "Conflicts: 0" in output
    imported = AwsAccount.objects.get(account_id=ACCOUNT_B)
    assert imported.name == f"Imported {ACCOUNT_B}"
    assert imported.invoke_role_arn == f"arn:aws:iam::{ACCOUNT_B}:role/GatehouseInvokeRole"
    assert imported.results_bucket == "imported-results"
    assert imported.default_region == REGION
    assert Lob.objects.get(slug="lob-c").aws_account == imported
    assert Lob.objects.get(slug="lob-c").name == "lob-c"
    carol = User.objects.get(username="carol")
    assert carol.idp_subject == ""
    assert not carol.has_usable_password()
    assert list(
        Membership.objects.filter(user=carol)
        .order_by("created_at", "pk")
        .values_list("lob__slug", "role")
    ) == [("lob-b", "analyst"), ("lob-a", "analyst")]
    assert desired_user_item(username="carol") == {
        "PK": "carol",
        "LOB": "lob-b",
        "LOBS": ["lob-b", "lob-a"],
    }
    event = AuditEvent.objects.get(action="mapping.imported")
    assert event.detail["memberships_created"] == 3
    assert event.detail["users_created"] == 2

    again = io.StringIO()
    call_command("dynamodb_import", "--results-bucket", "imported-results", stdout=again)

    assert "AWS accounts created: 0" in again.getvalue()
    assert "Memberships created: 0" in again.getvalue()
    assert AwsAccount.objects.count() == 2
    assert Lob.objects.count() == 3
    assert User.objects.count() == 2
    assert Membership.objects.count() == 3
    assert AuditEvent.objects.filter(action="mapping.imported").count() == 2


def test_import_reports_conflicts_and_never_moves_an_existing_lob(tables: Tables) -> None:
    existing = lob("lob-a", ACCOUNT_A)
    erin = user("erin")
    member(erin, lob("lob-e"))
    tables.put_lob({"PK": "lob-a", "ACCOUNT_ID": ACCOUNT_B})
    tables.put_lob({"PK": "not a slug!", "ACCOUNT_ID": ACCOUNT_B})
    tables.put_user({"PK": "frank", "LOB": "lob-unknown"})
    tables.put_user({"PK": "erin", "LOB": "lob-a"})

    result = mapping_import(default_region=REGION, results_bucket="imported-results")

    existing.refresh_from_db()
    assert existing.aws_account.account_id == ACCOUNT_A
    conflicts = "\n".join(result.conflicts)
    assert f"LOB lob-a is in account {ACCOUNT_A} in the portal but {ACCOUNT_B}" in conflicts
    assert "'not a slug!': not a valid LOB slug" in conflicts
    assert "frank is in LOB lob-unknown, which the portal does not have" in conflicts
    assert "erin has LOB=lob-a in the table but the portal's earliest membership is lob-e" in (
        conflicts
    )
    assert result.lobs_created == 0
    # erin keeps her identity and gains the membership; frank is a placeholder without one.
    assert Membership.objects.filter(user=erin, lob__slug="lob-a").exists()
    assert User.objects.get(username="erin").idp_subject == "sub-erin"
    assert not Membership.objects.filter(user__username="frank").exists()


def test_import_refuses_bad_arguments(tables: Tables) -> None:
    with pytest.raises(CommandError, match="bucket"):
        call_command("dynamodb_import", "--results-bucket", "Not_A_Bucket", stdout=io.StringIO())
    with pytest.raises(CommandError, match="region"):
        call_command(
            "dynamodb_import",
            "--results-bucket",
            "imported-results",
            "--region",
            "mars-1",
            stdout=io.StringIO(),
        )


def test_import_does_not_bring_back_a_deleted_lobs_slug(tables: Tables) -> None:
    # Its item may still be in the table (the deletion not drained yet, DynamoDB down).
    AuditEvent.objects.create(action="lob.deleted", outcome="success", lob_slug="lob-old")
    tables.put_lob({"PK": "lob-old", "ACCOUNT_ID": ACCOUNT_A})
    out = io.StringIO()

    call_command("dynamodb_import", "--results-bucket", "imported-results", stdout=out)

    assert not Lob.objects.filter(slug="lob-old").exists()
    assert "a deleted LOB had this slug" in out.getvalue()


def test_the_upgrade_queues_every_viewer_for_publication_again(settings) -> None:
    # Before this version viewers were published; the migration queues them so the drain
    # rewrites or deletes their items.
    settings.DYNAMODB_PUBLICATION_ENABLED = True
    migration = importlib.import_module("accounts.migrations.0004_republish_viewers")
    viewer, analyst = user("vic"), user("ann")
    lob_a = lob("lob-a")
    Membership.objects.create(user=viewer, lob=lob_a, role=Membership.Role.VIEWER)
    Membership.objects.create(user=analyst, lob=lob_a, role=Membership.Role.ANALYST)
    MappingOutbox.objects.all().delete()

    migration.republish_viewers(django_apps, None)

    assert list(MappingOutbox.objects.values_list("kind", "key")) == [("user", "vic")]


def test_items_whose_keys_hold_nul_are_repaired_and_imported_without_a_database_error(
    tables: Tables,
) -> None:
    # Only someone writing to the table by hand makes such items; PostgreSQL cannot compare NUL.
    lob("lob-a")
    tables.put_user({"PK": "stray\x00user", "LOB": "lob-a"})
    tables.put_user({"PK": "carol", "LOB": "lob-\x00a"})

    call_command("dynamodb_import", "--results-bucket", "imported-results", stdout=io.StringIO())
    call_command("dynamodb_sync", "--apply", stdout=io.StringIO())

    assert "stray\x00user" not in tables.scan(tables.users)
    assert not Membership.objects.filter(user__username="carol").exists()


# --- Repairs and changes racing -------------------------------------------------------------------
@pytest.mark.skipif(
    not connection.features.has_select_for_update_skip_locked,
    reason="needs PostgreSQL (row locks between connections); CI runs it on PostgreSQL",
)
@pytest.mark.django_db(transaction=True)
def test_a_repair_racing_a_change_and_its_drain_leaves_no_stale_item(
    tables: Tables, monkeypatch
) -> None:
    """`dynamodb_sync --apply` computed alice's item, then she was removed and that change was
    drained before the repair's write landed: the table must still end without her item."""
    alice = user("alice")
    membership = member(alice, lob("lob-a"))
    admin = user("root", is_staff=True)
    drift = mapping_drift()
    assert [entry.key for entry in drift.users.missing] == ["alice"]
    real_write = repair._write
    repair_thread = threading.get_ident()
    raced: list[DrainResult] = []

    def change_and_drain_elsewhere() -> None:
        try:
            tenancy.membership_delete(membership=membership, acting_user=admin)
            raced.append(mapping_outbox_drain())
        finally:
            connection.close()

    def write(dynamodb, *, table, key, item):
        if threading.get_ident() == repair_thread and key == "alice" and not raced:
            other = threading.Thread(target=change_and_drain_elsewhere)
            other.start()
            other.join(10)
        real_write(dynamodb, table=table, key=key, item=item)

    monkeypatch.setattr(repair, "_write", write)

    mapping_publication.mapping_repair(drift=drift)
    assert raced
    make_all_due()
    mapping_outbox_drain()  # what beat does every 30 s

    assert tables.user("alice") is None
    assert mapping_drift().clean


@pytest.mark.skipif(
    not connection.features.has_select_for_update_skip_locked,
    reason="needs PostgreSQL (row locks between connections); CI runs it on PostgreSQL",
)
@pytest.mark.django_db(transaction=True)
def test_a_member_added_while_the_lob_is_deactivated_is_not_left_in_the_table(
    tables: Tables,
) -> None:
    """The deactivation queues the members it sees; one added meanwhile, and drained before the
    deactivation committed, must not stay in the users table."""
    lob_a = lob("lob-a")
    member(user("alice"), lob_a)
    bob, admin = user("bob"), user("root", is_staff=True)
    deactivated, commit = threading.Event(), threading.Event()

    def deactivate() -> None:
        try:
            with transaction.atomic():
                tenancy.lob_update(
                    lob=Lob.objects.get(pk=lob_a.pk), acting_user=admin, is_active=False
                )
                deactivated.set()
                commit.wait(10)
        finally:
            connection.close()

    def add_bob() -> None:
        try:
            tenancy.membership_create(
                lob=Lob.objects.get(pk=lob_a.pk), user=bob, role="analyst", acting_user=admin
            )
        finally:
            connection.close()

    first = threading.Thread(target=deactivate)
    first.start()
    assert deactivated.wait(10)
    second = threading.Thread(target=add_bob)
    second.start()
    second.join(2)
    mapping_outbox_drain()  # bob's drain, while the deactivation is not committed yet
    commit.set()
    first.join(10)
    second.join(10)
    make_all_due()
    mapping_outbox_drain()

    assert Membership.objects.filter(user=bob, lob=lob_a).exists()
    assert tables.user("bob") is None
    assert mapping_drift().clean


@pytest.mark.skipif(
    not connection.features.has_select_for_update_skip_locked,
    reason="needs PostgreSQL (row locks between connections); CI runs it on PostgreSQL",
)
@pytest.mark.django_db(transaction=True)
def test_a_lob_deleted_while_a_member_is_added_goes_with_that_member(tables: Tables) -> None:
    """The deletion collects the LOB's rows, then deletes them: a membership inserted between the
    two made the LOB's DELETE fail its foreign key (a 500), unless the deletion waits for it."""
    lob_a = lob("lob-a")
    bob, admin = user("bob"), user("root", is_staff=True)
    added, commit = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def add_bob() -> None:
        try:
            with transaction.atomic():
                tenancy.membership_create(
                    lob=Lob.objects.get(pk=lob_a.pk), user=bob, role="analyst", acting_user=admin
                )
                added.set()
                commit.wait(10)
        finally:
            connection.close()

    def delete_lob() -> None:
        try:
            tenancy.lob_delete(lob=Lob.objects.get(pk=lob_a.pk), acting_user=admin)
        except BaseException as exc:  # reported below, from the test's own thread
            failures.append(exc)
        finally:
            connection.close()

    first = threading.Thread(target=add_bob)
    first.start()
    assert added.wait(10)
    second = threading.Thread(target=delete_lob)
    second.start()
    second.join(1)  # the deletion is under way (and, with the fix, waiting) before bob commits
    commit.set()
    first.join(10)
    second.join(10)

    assert failures == []
    assert not Lob.objects.filter(pk=lob_a.pk).exists()
    assert not Membership.objects.filter(user=bob).exists()
    make_all_due()
    mapping_outbox_drain()
    assert tables.user("bob") is None
    assert mapping_drift().clean
