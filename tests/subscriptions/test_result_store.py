"""When a call's answer is written to S3: before answering (default) or on writer threads after."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from accounts.models import AuditEvent, AwsAccount
from subscriptions.models import Invocation
from subscriptions.services import result_store
from tests.subscriptions.conftest import ACCOUNT_A, ProxyWorld

# Writer threads read rows the test wrote: they must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def after_answer(settings):
    settings.INVOKE_RESULT_WRITE = result_store.AFTER_ANSWER
    yield
    result_store.writers.drain()


def stored_object(proxy: ProxyWorld, uri: str) -> dict:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return proxy.s3().get_object(Bucket=bucket, Key=key)


def test_by_default_the_object_exists_when_the_caller_has_the_answer(proxy: ProxyWorld) -> None:
    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert response.status_code == 200
    stored = stored_object(proxy, response["X-Result-Uri"])
    assert stored["Body"].read() == response.content
    invocation = Invocation.objects.get(pk=response["X-Invocation-Id"])
    assert invocation.result_stored_at is not None
    assert invocation.result_uri == response["X-Result-Uri"]


def test_after_answer_the_writer_stores_the_answer_and_marks_the_row(
    proxy: ProxyWorld, after_answer
) -> None:
    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())
    assert response.status_code == 200
    result_store.writers.drain()

    stored = stored_object(proxy, response["X-Result-Uri"])
    assert stored["Body"].read() == response.content
    assert stored["ServerSideEncryption"] == "AES256"
    invocation = Invocation.objects.get(pk=response["X-Invocation-Id"])
    assert (invocation.outcome, invocation.result_uri) == ("ok", response["X-Result-Uri"])
    assert invocation.result_stored_at is not None


def test_after_answer_a_failed_write_changes_the_outcome_and_is_audited(
    proxy: ProxyWorld, after_answer
) -> None:
    token = proxy.token()
    AwsAccount.objects.filter(account_id=ACCOUNT_A).update(results_bucket="no-such-bucket-here")

    response = proxy.invoke("analyst", proxy.subscription_a, token=token)
    assert response.status_code == 200  # the caller already has the model's answer
    result_store.writers.drain()

    invocation = Invocation.objects.get(pk=response["X-Invocation-Id"])
    assert (invocation.outcome, invocation.result_stored_at) == ("result_not_stored", None)
    event = AuditEvent.objects.get(action="subscription.result_stored")
    assert (event.outcome, event.reason, event.target_id) == (
        "failure",
        "result_not_stored",
        str(invocation.pk),
    )
    assert event.actor == proxy.world.user("analyst")
    assert event.lob_slug == "lob-a"


def test_after_answer_with_every_writer_busy_the_call_writes_its_own(
    proxy: ProxyWorld, after_answer, monkeypatch
) -> None:
    monkeypatch.setattr(result_store.writers, "submit", lambda *args: False)

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    # No drain: the object was written before the answer went back.
    assert stored_object(proxy, response["X-Result-Uri"])["Body"].read() == response.content
    assert Invocation.objects.get(pk=response["X-Invocation-Id"]).result_stored_at is not None


def test_writers_accept_no_more_than_their_bound(settings, after_answer, monkeypatch) -> None:
    settings.INVOKE_RESULT_WRITERS = 1
    settings.INVOKE_RESULT_QUEUE = 1
    release = threading.Event()
    written: list[str] = []

    def slow_write(invocation_id, result) -> None:
        release.wait(timeout=10)
        written.append(result)

    monkeypatch.setattr(result_store, "_write_and_mark", slow_write)
    accepted = [result_store.writers.submit(None, f"result-{n}") for n in range(3)]
    release.set()
    result_store.writers.drain()

    assert accepted == [True, True, False]
    assert written == ["result-0", "result-1"]


def test_the_setting_is_checked_at_start_up(monkeypatch) -> None:
    monkeypatch.setenv("INVOKE_RESULT_WRITE", "sometimes")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "portal.settings")
    completed = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode != 0
    assert "INVOKE_RESULT_WRITE must be before_answer or after_answer" in completed.stderr
