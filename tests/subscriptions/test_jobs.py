"""Inference jobs end to end, with Celery eager: upload → chunks through the proxy path → parts,
merged output and manifest in the LOB's bucket; progress, retries, cancellation, refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.conf import settings as django_settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.db import OperationalError
from django.utils import timezone

from accounts.models import AuditEvent, Membership
from portal import aws_gateway, celery_app
from subscriptions import tasks
from subscriptions.models import Job, JobChunk
from subscriptions.services import jobs, seller_tokens
from tests.subscriptions.conftest import ACCOUNT_A, PRODUCT, ProxyWorld

pytestmark = pytest.mark.django_db

BUCKET_A = "gatehouse-results-111111111111"
JOBS_PREFIX_A = "gatehouse/lob-a/jobs/"


@pytest.fixture
def world(proxy: ProxyWorld, eager: None, settings) -> ProxyWorld:
    return jobs_world(proxy, settings)


def jobs_world(proxy: ProxyWorld, settings) -> ProxyWorld:
    """The proxy world with three records a chunk and no job objects left in the bucket."""
    settings.JOBS_RECORDS_PER_CHUNK = 3
    settings.JOBS_CHUNK_MAX_RETRIES = 25
    # The moto server lives for the session: start each test with no job objects.
    s3 = proxy.s3()
    for key in s3_keys(proxy):
        s3.delete_object(Bucket=BUCKET_A, Key=key)
    return proxy


def csv_file(rows: list[str], header: str = "email,phone", name: str = "input.csv") -> io.BytesIO:
    data = io.BytesIO(("\n".join([header, *rows]) + "\n").encode())
    data.name = name
    return data


def good_rows(count: int) -> list[str]:
    return [f"person{n}@example.com,555010{n % 10}{n % 7}{n % 3}" for n in range(count)]


def submit(
    world: ProxyWorld,
    upload: io.BytesIO | None = None,
    *,
    principal: str = "analyst",
    subscription: Any = None,
    run: bool = True,
    capture: Any = None,
    **fields: Any,
):
    data: dict[str, Any] = {"subscription": (subscription or world.subscription_a).pk, **fields}
    headers = {}
    if "idempotency_key" in data:
        headers["HTTP_IDEMPOTENCY_KEY"] = data.pop("idempotency_key")
    if upload is not None:
        data["file"] = upload
    with capture(execute=run) as callbacks:
        response = world.client(principal).post(
            "/api/v1/jobs/", data, format="multipart", **headers
        )
    response.callbacks = callbacks
    return response


def s3_keys(world: ProxyWorld, prefix: str = JOBS_PREFIX_A) -> list[str]:
    listing = world.s3().list_objects_v2(Bucket=BUCKET_A, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def s3_lines(world: ProxyWorld, uri: str) -> list[dict]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = world.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in body.decode().splitlines()]


# --- The happy path -------------------------------------------------------------------------------


def test_analyst_job_runs_every_chunk_and_writes_parts_output_and_manifest(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    response = submit(world, csv_file(good_rows(7)), capture=django_capture_on_commit_callbacks)

    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert response.json()["status"] == "queued"
    assert job.status == Job.Status.SUCCEEDED, (job.error_code, job.error_message)
    assert (job.records_total, job.records_done, job.records_failed) == (7, 7, 0)
    assert (job.chunks_total, job.chunks_done) == (3, 3)
    assert job.started_at and job.finished_at and job.submitted_by == world.world.user("analyst")
    prefix = f"{JOBS_PREFIX_A}{job.pk}/"
    assert s3_keys(world, prefix) == [
        f"{prefix}{name}"
        for name in (
            "input",
            "manifest.json",
            "output.jsonl",
            "part-00000.jsonl",
            "part-00001.jsonl",
            "part-00002.jsonl",
        )
    ]
    assert job.input_uri == f"s3://{BUCKET_A}/{prefix}input"
    assert job.output_uri == f"s3://{BUCKET_A}/{prefix}output.jsonl"
    output = s3_lines(world, job.output_uri)
    assert [entry["record"] for entry in output] == list(range(7))
    assert [entry["line"] for entry in output] == list(range(2, 9))
    assert all(set(entry["ids"]) == {"email", "phone"} for entry in output)
    assert b"person" not in json.dumps(output).encode()
    bucket, _, key = job.manifest_uri.removeprefix("s3://").partition("/")
    manifest = json.loads(world.s3().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest["status"] == "succeeded" and len(manifest["parts"]) == 3
    assert [part["records"] for part in manifest["parts"]] == [3, 3, 1]
    # Each chunk went through the proxy path: one invocation, one seller token for all of them.
    assert job.subscription.invocations.filter(outcome="ok").count() == 3
    assert world.seller_counter.calls["/auth/init"] == 1
    assert AuditEvent.objects.filter(action="job.submitted", target_id=str(job.pk)).exists()


def test_a_chunk_writes_only_its_part_and_audits_its_call_but_not_each_token_reuse(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    invocations_prefix = "gatehouse/lob-a/invocations/"
    before = s3_keys(world, invocations_prefix)  # the session's other tests invoke too

    response = submit(world, csv_file(good_rows(7)), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED
    # The part is the chunk's result: no second copy of each answer under invocations/.
    assert s3_keys(world, invocations_prefix) == before
    calls = job.subscription.invocations.filter(outcome="ok")
    assert [call.result_uri for call in calls] == ["", "", ""]
    # Each call's record names the job instead, for the subscription page to link to.
    assert [call.job_id for call in calls] == [job.pk] * 3
    # One subscription.invoked per chunk call; subscription.authorized only for the token the
    # seller issued, not for its reuse by the next chunks.
    invoked = AuditEvent.objects.filter(action="subscription.invoked")
    assert invoked.count() == 3
    assert {(event.outcome, event.detail["job_id"]) for event in invoked} == {
        (AuditEvent.Outcome.SUCCESS, str(job.pk))
    }
    authorized = AuditEvent.objects.filter(action="subscription.authorized")
    assert [(event.outcome, event.detail["cached"]) for event in authorized] == [
        (AuditEvent.Outcome.SUCCESS, False)
    ]
    assert world.seller_counter.calls["/auth/init"] == 1


def test_job_detail_results_and_download(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job_id = submit(
        world, csv_file(good_rows(7)), capture=django_capture_on_commit_callbacks
    ).json()["id"]
    client = world.client("viewer")  # viewers read their LOB's results

    detail = client.get(f"/api/v1/jobs/{job_id}/")
    assert detail.status_code == 200
    assert detail.json()["progress"] == 1.0 and detail.json()["status"] == "succeeded"

    page = client.get(f"/api/v1/jobs/{job_id}/results/?page=2&page_size=4").json()
    assert page["count"] == 7
    assert [entry["record"] for entry in page["results"]] == [4, 5, 6]
    assert page["next"] is None and page["previous"]

    download = client.get(f"/api/v1/jobs/{job_id}/download/")
    assert download.status_code == 302
    assert f"{job_id}/output.jsonl" in download["Location"]
    assert "X-Amz-Expires=60" in download["Location"] or "Expires=" in download["Location"]
    assert AuditEvent.objects.filter(action="job.downloaded", target_id=job_id).exists()

    listed = client.get("/api/v1/jobs/?status=succeeded&lob=lob-a").json()
    assert [item["id"] for item in listed["results"]] == [job_id]
    assert client.get("/api/v1/jobs/?status=failed").json()["results"] == []
    assert client.get("/api/v1/jobs/?submitter=lob-a-analyst").json()["results"]


def test_neither_the_seller_token_the_records_nor_the_download_url_is_logged(
    world: ProxyWorld, django_capture_on_commit_callbacks, caplog
) -> None:
    caplog.set_level("DEBUG")  # as with LOG_LEVEL=DEBUG: the settings keep botocore quiet
    rows = good_rows(7)

    job_id = submit(world, csv_file(rows), capture=django_capture_on_commit_callbacks).json()["id"]
    download = world.client("analyst").get(f"/api/v1/jobs/{job_id}/download/")

    assert Job.objects.get(pk=job_id).status == Job.Status.SUCCEEDED
    assert download.status_code == 302
    token = seller_tokens._cached_token(world.subscription_a).token
    signed_query = download["Location"].partition("?")[2]
    assert "job.downloaded" in caplog.text  # the log was captured
    for secret in (token, token.split(".")[2], signed_query, *rows, "person0@example.com"):
        assert secret not in caplog.text


def test_jsonlines_input_from_the_lobs_results_location(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    body = b"".join(json.dumps({"email": f"p{n}@example.org"}).encode() + b"\n" for n in range(5))
    key = "gatehouse/lob-a/uploads/batch.jsonl"
    world.s3().put_object(Bucket=BUCKET_A, Key=key, Body=body)

    with django_capture_on_commit_callbacks(execute=True):
        response = world.client("analyst").post(
            "/api/v1/jobs/",
            {"subscription": world.subscription_a.pk, "input_uri": f"s3://{BUCKET_A}/{key}"},
            format="json",
        )

    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.content_type == "application/jsonlines"
    assert job.status == Job.Status.SUCCEEDED and job.records_done == 5


# --- Record errors, retries, run-time checks ------------------------------------------------------


def test_records_the_model_rejects_make_the_job_partially_succeeded_with_their_lines(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    rows = [*good_rows(2), ",", *good_rows(2), "not-an-email,", ","]
    response = submit(world, csv_file(rows), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.PARTIALLY_SUCCEEDED
    assert (job.records_total, job.records_done, job.records_failed) == (7, 7, 3)
    detail = world.client("analyst").get(f"/api/v1/jobs/{job.pk}/").json()
    assert detail["record_errors"] == [
        {"record": 2, "line": 4, "error": "no_identifier"},
        {"record": 5, "line": 7, "error": "invalid_email"},
        {"record": 6, "line": 8, "error": "no_identifier"},
    ]
    output = s3_lines(world, job.output_uri)
    assert len(output) == 7
    assert [entry["line"] for entry in output if "error" in entry] == [4, 7, 8]


def test_blank_lines_and_quoted_line_breaks_keep_line_numbers_right(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    rows = ['"person@example.com",""', "", '"a@example.com","first line', 'second line"', ","]
    response = submit(
        world,
        csv_file(rows, header="email,note"),
        capture=django_capture_on_commit_callbacks,
    )

    job = Job.objects.get(pk=response.json()["id"])
    output = s3_lines(world, job.output_uri)
    assert [(entry["record"], entry["line"]) for entry in output] == [(0, 2), (1, 4), (2, 6)]
    assert "error" in output[2] and "error" not in output[1]


def test_throttling_and_model_5xx_are_retried_until_every_record_has_its_output(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    settings.JOBS_RECORDS_PER_CHUNK = 2
    world.knobs(error_rate=0.2, throttle_rate=0.2)
    response = submit(world, csv_file(good_rows(20)), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    assert len(s3_lines(world, job.output_uri)) == 20
    assert [e["record"] for e in s3_lines(world, job.output_uri)] == list(range(20))
    assert job.subscription.invocations.exclude(outcome="ok").exists()  # there were failures


def test_the_seller_token_is_renewed_between_chunks_once_most_of_its_life_is_spent(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    # A 15-minute token cached for about a quarter of a second; each model call takes longer.
    settings.SELLER_TOKEN_CACHE_FRACTION = 0.0003
    world.knobs(latency_ms=400)
    response = submit(world, csv_file(good_rows(10)), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    assert 1 < world.seller_counter.calls["/auth/init"] <= job.chunks_total


def test_a_chunk_whose_seller_token_expired_gets_a_new_one_and_runs_again(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    authorize = jobs.chunks.subscription_authorize
    handed_out: list[str] = []

    def expired_first(**kwargs: Any):
        seller_token = authorize(**kwargs)
        if not handed_out:  # as if it had expired between the chunk's check and its call
            expired = world.sign(iat=int(time.time()) - 1000, exp=int(time.time()) - 100)
            seller_token = dataclasses.replace(seller_token, token=expired)
        handed_out.append(seller_token.token)
        return seller_token

    monkeypatch.setattr(jobs.chunks, "subscription_authorize", expired_first)
    response = submit(world, csv_file(good_rows(7)), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    outcomes = list(job.subscription.invocations.values_list("outcome", flat=True))
    assert sorted(outcomes) == ["ok", "ok", "ok", "token_expired"]
    assert [e["record"] for e in s3_lines(world, job.output_uri)] == list(range(7))


@pytest.mark.parametrize("fails", ["_chunk_close", "_chunk_prepare"])
def test_a_database_error_in_a_chunk_is_retried_and_every_record_gets_its_output(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch, fails: str
) -> None:
    # The database goes away once for chunk 1 ("database is locked", a failover): that chunk runs
    # again on its own, the others are not run twice.
    step = getattr(jobs.chunks, fails)
    failed: list[int] = []

    def once_locked(*args: Any, **kwargs: Any):
        if kwargs.get("index", args[1] if len(args) > 1 else None) == 1 and not failed:
            failed.append(1)
            raise OperationalError("database is locked")
        return step(*args, **kwargs)

    monkeypatch.setattr(jobs.chunks, fails, once_locked)
    response = submit(world, csv_file(good_rows(9)), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert failed == [1]
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    assert (job.records_done, job.chunks_done) == (9, 3)
    assert [e["record"] for e in s3_lines(world, job.output_uri)] == list(range(9))
    assert job.subscription.invocations.count() == (3 if fails == "_chunk_prepare" else 4)


def test_a_chunks_model_call_is_recorded_even_when_its_part_cannot_be_written(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    # The record of a chunk's call is written after the call (by the helper thread, in a
    # worker): a chunk failing after its call must not lose it.
    put_part = jobs.chunks.put_part

    def refused_for_part_1(job: Job, key: str, *args: Any) -> None:
        if key.endswith("part-00001.jsonl"):
            raise aws_gateway.NotAuthorized("AccessDenied", aws_code="AccessDenied")
        put_part(job, key, *args)

    monkeypatch.setattr(jobs.chunks, "put_part", refused_for_part_1)
    response = submit(world, csv_file(good_rows(9)), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.FAILED
    assert job.chunks.get(index=1).status == "failed"
    calls = job.subscription.invocations.filter(outcome="ok")
    assert sorted(call.records for call in calls) == [3, 3, 3]
    invoked = AuditEvent.objects.filter(action="subscription.invoked", outcome="success")
    assert sorted(event.detail["invocation_id"] for event in invoked) == sorted(
        str(call.pk) for call in calls
    )


def test_a_part_gone_before_the_merge_fails_the_job_with_the_reason(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job_id = running_job(world, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        for index in range(3):
            tasks.job_chunk_run.apply(args=(job_id, index))
    # Deleted meanwhile (by hand, or a lifecycle rule): merging can never succeed.
    world.s3().delete_object(Bucket=BUCKET_A, Key=f"{JOBS_PREFIX_A}{job_id}/part-00001.jsonl")

    tasks.job_finalize.apply(args=(job_id,))

    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.FAILED and job.error_code == "output_not_written"
    assert "NoSuchKey" in job.error_message
    assert job.output_uri == "" and job.finished_at is not None
    event = AuditEvent.objects.get(action="job.stopped", target_id=job_id)
    assert (event.outcome, event.reason) == (AuditEvent.Outcome.FAILURE, "output_not_written")


def test_a_manifest_s3_refuses_for_good_fails_the_job_instead_of_merging_for_ever(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    job_id = running_job(world, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        for index in range(3):
            tasks.job_chunk_run.apply(args=(job_id, index))
    make_client = jobs.merge.s3_client

    def refusing_manifests(*args: Any, **kwargs: Any) -> Any:
        # A bucket policy denying the key (moto does not enforce policies): S3's own answer.
        client = make_client(*args, **kwargs)
        put = client.put_object

        def put_object(**params: Any) -> Any:
            if params["Key"].endswith("/manifest.json"):
                raise ClientError(
                    {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject"
                )
            return put(**params)

        client.put_object = put_object
        return client

    monkeypatch.setattr(jobs.merge, "s3_client", refusing_manifests)
    tasks.job_finalize.apply(args=(job_id,))

    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.FAILED and job.error_code == "output_not_written"
    assert "manifest" in job.error_message and job.finished_at is not None
    assert job.output_uri == "" and job.manifest_uri == ""
    keys = s3_keys(world)
    assert not any(key.endswith(("/output.jsonl", "/manifest.json")) for key in keys), keys
    # Not merged again later: the reconciler leaves finished jobs alone.
    assert jobs.jobs_reconcile() == 0


def test_a_model_failing_every_call_fails_the_job_with_error_entries_for_each_record(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    settings.JOBS_CHUNK_MAX_RETRIES = 1
    world.knobs(error_rate=1.0)
    response = submit(world, csv_file(good_rows(4)), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.FAILED and job.error_code == "chunks_failed"
    assert (job.records_done, job.records_failed) == (4, 4)
    output = s3_lines(world, job.output_uri)
    assert [(e["record"], e["error"]) for e in output] == [(n, "model_error") for n in range(4)]


def test_a_refusal_of_the_lobs_role_is_not_retried_and_fails_each_chunk_at_once(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    # The account's invoke role lacks sagemaker:InvokeEndpoint: every try fails the same way, so
    # retries (for transient failures only) would only delay the job's end.
    refused: list[str] = []
    real_client = aws_gateway.client

    def refuse(**parameters: Any):
        refused.append(parameters["EndpointName"])
        error = {"Code": "AccessDeniedException", "Message": "not authorized to InvokeEndpoint"}
        raise ClientError(
            {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, "InvokeEndpoint"
        )

    def client(service: str, **kwargs: Any):
        if service == "sagemaker-runtime":
            return SimpleNamespace(invoke_endpoint=refuse)
        return real_client(service, **kwargs)

    monkeypatch.setattr(aws_gateway, "client", client)
    response = submit(world, csv_file(good_rows(7)), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.FAILED and job.error_code == "chunks_failed"
    assert len(refused) == job.chunks_total == 3  # one call a chunk, none again
    assert (job.records_done, job.records_failed) == (7, 7)
    output = s3_lines(world, job.output_uri)
    assert {e["error"] for e in output} == {"upstream_error"}


def test_a_submitter_removed_from_the_lob_stops_the_job_when_it_runs(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    response = submit(
        world, csv_file(good_rows(4)), run=False, capture=django_capture_on_commit_callbacks
    )
    assert response.status_code == 202
    Membership.objects.filter(user=world.world.user("analyst")).delete()

    for callback in response.callbacks:
        with django_capture_on_commit_callbacks(execute=True):
            callback()

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.FAILED
    assert job.error_code == "not_a_member"
    assert world.container_counter.calls["/invocations"] == 0
    assert not job.chunks.filter(status=JobChunk.Status.PENDING).exists()


@pytest.mark.parametrize("change", ["subscription_inactive", "not_entitled", "may_not_invoke"])
def test_a_job_the_submitter_may_no_longer_run_stops_with_the_reason(
    world: ProxyWorld, django_capture_on_commit_callbacks, change: str
) -> None:
    response = submit(
        world, csv_file(good_rows(4)), run=False, capture=django_capture_on_commit_callbacks
    )
    assert response.status_code == 202
    if change == "subscription_inactive":
        world.subscription_a.status = "cancelled"
        world.subscription_a.save()
    elif change == "not_entitled":  # the seller no longer vouches for lob-a's account
        entitlements = world.seller_app.extensions["seller_token_service"]["entitlements"]
        entitlements.revoke(PRODUCT, ACCOUNT_A)
    else:  # the submitter is now a viewer
        Membership.objects.filter(user=world.world.user("analyst")).update(
            role=Membership.Role.VIEWER
        )

    for callback in response.callbacks:
        with django_capture_on_commit_callbacks(execute=True):
            callback()

    job = Job.objects.get(pk=response.json()["id"])
    assert (job.status, job.error_code) == (Job.Status.FAILED, change)
    assert job.error_message
    assert world.container_counter.calls["/invocations"] == 0
    assert not job.chunks.filter(status=JobChunk.Status.PENDING).exists()
    event = AuditEvent.objects.get(action="job.stopped", target_id=str(job.pk))
    assert event.reason == change


def test_chunks_are_cut_to_stay_within_the_payload_limit(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    settings.JOBS_RECORDS_PER_CHUNK = 1000
    settings.JOBS_MAX_CHUNK_BYTES = 100
    response = submit(world, csv_file(good_rows(10)), capture=django_capture_on_commit_callbacks)

    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED and job.chunks_total > 1
    header = len(b"email,phone\n")
    assert all(
        header + chunk.byte_length <= 100
        for chunk in job.chunks.all()  # the payload a chunk sends is its header and its rows
    )
    assert [e["record"] for e in s3_lines(world, job.output_uri)] == list(range(10))


def test_a_chunk_delivered_twice_is_counted_once(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    response = submit(
        world, csv_file(good_rows(4)), run=False, capture=django_capture_on_commit_callbacks
    )
    job_id = response.json()["id"]
    Job.objects.filter(pk=job_id).update(status=Job.Status.RUNNING)

    with django_capture_on_commit_callbacks(execute=False):
        tasks.job_chunk_run.apply(args=(job_id, 0))
        tasks.job_chunk_run.apply(args=(job_id, 0))

    job = Job.objects.get(pk=job_id)
    assert (job.records_done, job.chunks_done) == (3, 1)
    assert world.container_counter.calls["/invocations"] == 1


def test_reconciler_enqueues_the_chunks_of_a_stalled_job(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    settings.JOBS_STALL_SECONDS = 60
    response = submit(
        world, csv_file(good_rows(7)), run=False, capture=django_capture_on_commit_callbacks
    )
    job_id = response.json()["id"]
    # The start message was lost (say, Redis died): nothing runs until the reconciler looks.
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.jobs_reconcile.apply().get() == 0
    Job.objects.filter(pk=job_id).update(last_progress_at=timezone.now() - timedelta(minutes=5))

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.jobs_reconcile.apply().get() == 1

    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.SUCCEEDED and job.records_done == 7


@pytest.mark.parametrize("lost", ["chunks", "finalize"])
def test_reconciler_enqueues_what_a_running_job_is_missing(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings, lost: str
) -> None:
    settings.JOBS_STALL_SECONDS = 60
    job_id = running_job(world, django_capture_on_commit_callbacks)
    # Chunk 0 ran; the messages of the others (or of the final step) were lost.
    done = [0] if lost == "chunks" else [0, 1, 2]
    with django_capture_on_commit_callbacks(execute=False):
        for index in done:
            tasks.job_chunk_run.apply(args=(job_id, index))
    Job.objects.filter(pk=job_id).update(last_progress_at=timezone.now() - timedelta(minutes=5))
    calls_before = world.container_counter.calls["/invocations"]

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.jobs_reconcile.apply().get() == 1

    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.SUCCEEDED and (job.records_done, job.chunks_done) == (7, 3)
    assert [e["record"] for e in s3_lines(world, job.output_uri)] == list(range(7))
    # Only what was missing ran: chunk 0 was not called again.
    assert world.container_counter.calls["/invocations"] - calls_before == 3 - len(done)


# --- Idempotency and cancellation -----------------------------------------------------------------


def test_the_same_idempotency_key_returns_the_same_job(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    first = submit(
        world,
        csv_file(good_rows(4)),
        idempotency_key="batch-2026-11-22",
        capture=django_capture_on_commit_callbacks,
    )
    again = submit(
        world,
        csv_file(good_rows(4)),
        idempotency_key="batch-2026-11-22",
        capture=django_capture_on_commit_callbacks,
    )

    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert Job.objects.count() == 1
    assert len([k for k in s3_keys(world) if k.endswith("/input")]) == 1
    assert world.container_counter.calls["/invocations"] == 2  # ran once


def test_an_idempotency_key_belongs_to_its_submitter_and_subscription(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    key = "batch-2026-11-23"
    mine = submit(
        world,
        csv_file(good_rows(2)),
        idempotency_key=key,
        run=False,
        capture=django_capture_on_commit_callbacks,
    )
    theirs = submit(
        world,
        csv_file(good_rows(2)),
        principal="lob_admin",
        idempotency_key=key,
        run=False,
        capture=django_capture_on_commit_callbacks,
    )
    Membership.objects.create(
        user=world.world.user("analyst"), lob=world.world.lob_b, role=Membership.Role.ANALYST
    )
    elsewhere = submit(
        world,
        csv_file(good_rows(2)),
        subscription=world.subscription_b,
        idempotency_key=key,
        run=False,
        capture=django_capture_on_commit_callbacks,
    )

    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]
    assert elsewhere.status_code == 409 and elsewhere.json()["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 2


def test_an_input_uri_naming_no_object_is_refused_and_nothing_is_left(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = world.client("analyst").post(
            "/api/v1/jobs/",
            {
                "subscription": world.subscription_a.pk,
                "input_uri": f"s3://{BUCKET_A}/gatehouse/lob-a/uploads/missing.csv",
            },
            format="json",
        )

    assert response.status_code == 400 and response.json()["code"] == "input_not_found"
    assert not Job.objects.exists() and s3_keys(world) == []


def test_cancelling_skips_the_remaining_chunks_and_keeps_finished_parts(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    response = submit(
        world, csv_file(good_rows(7)), run=False, capture=django_capture_on_commit_callbacks
    )
    job_id = response.json()["id"]
    Job.objects.filter(pk=job_id).update(status=Job.Status.RUNNING)
    with django_capture_on_commit_callbacks(execute=False):
        tasks.job_chunk_run.apply(args=(job_id, 0))

    cancelled = world.client("lob_admin").post(f"/api/v1/jobs/{job_id}/cancel/")
    with django_capture_on_commit_callbacks(execute=True):
        for callback in response.callbacks:  # the queued start and chunks still arrive
            callback()
        tasks.job_chunk_run.apply(args=(job_id, 1))

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.CANCELLED and job.records_done == 3
    statuses = list(job.chunks.order_by("index").values_list("status", flat=True))
    assert statuses == ["succeeded", "skipped", "skipped"]
    assert s3_keys(world, f"{JOBS_PREFIX_A}{job_id}/part") == [
        f"{JOBS_PREFIX_A}{job_id}/part-00000.jsonl"
    ]
    assert world.container_counter.calls["/invocations"] == 1
    assert AuditEvent.objects.filter(action="job.cancelled", target_id=job_id).exists()
    again = world.client("lob_admin").post(f"/api/v1/jobs/{job_id}/cancel/")
    assert again.status_code == 409 and again.json()["code"] == "job_finished"


def running_job(world: ProxyWorld, capture: Any) -> str:
    """A job of 7 records (3 chunks) marked running, none of its tasks enqueued."""
    response = submit(world, csv_file(good_rows(7)), run=False, capture=capture)
    job_id = response.json()["id"]
    Job.objects.filter(pk=job_id).update(status=Job.Status.RUNNING)
    return job_id


def test_a_chunk_running_when_its_job_is_cancelled_keeps_its_part_and_is_counted(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    job_id = running_job(world, django_capture_on_commit_callbacks)
    call_the_model = jobs.chunks.invocation_run

    def cancelled_while_the_model_answers(**kwargs: Any):
        result = call_the_model(**kwargs)
        jobs.job_cancel(job=Job.objects.get(pk=job_id), acting_user=world.world.user("lob_admin"))
        return result

    monkeypatch.setattr(jobs.chunks, "invocation_run", cancelled_while_the_model_answers)
    with django_capture_on_commit_callbacks(execute=False):
        tasks.job_chunk_run.apply(args=(job_id, 0))

    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.CANCELLED
    statuses = list(job.chunks.order_by("index").values_list("status", flat=True))
    assert statuses == ["succeeded", "skipped", "skipped"]
    assert (job.records_done, job.chunks_done) == (3, 3)
    assert s3_keys(world, f"{JOBS_PREFIX_A}{job_id}/part") == [
        f"{JOBS_PREFIX_A}{job_id}/part-00000.jsonl"
    ]


def _run_three_chunks_cancelled_after_the_first_is_prepared(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> Job:
    job_id = running_job(world, django_capture_on_commit_callbacks)
    prepare = jobs.chunks._chunk_prepare

    def prepared_then_cancelled(job_id: str, index: int):
        run = prepare(job_id, index)
        if index == 0:  # checked, token and records in hand — then the job is cancelled
            jobs.job_cancel(job=Job.objects.get(pk=job_id), acting_user=world.world.user("analyst"))
        return run

    monkeypatch.setattr(jobs.chunks, "_chunk_prepare", prepared_then_cancelled)
    with django_capture_on_commit_callbacks(execute=False):
        tasks.job_chunks_run.apply(args=(job_id, [0, 1, 2]))
    return Job.objects.get(pk=job_id)


def test_a_chunk_prepared_a_while_before_its_job_was_cancelled_makes_no_model_call(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    # As if the chunk had waited longer than the recheck interval (a slow model's call before it).
    monkeypatch.setattr(jobs.chunks, "_RECHECK_AFTER_SECONDS", -1.0)
    job = _run_three_chunks_cancelled_after_the_first_is_prepared(
        world, django_capture_on_commit_callbacks, monkeypatch
    )
    assert job.status == Job.Status.CANCELLED and job.records_done == 0
    assert set(job.chunks.values_list("status", flat=True)) == {"skipped"}
    assert world.container_counter.calls["/invocations"] == 0
    assert s3_keys(world, f"{JOBS_PREFIX_A}{job.pk}/part") == []


def test_a_chunk_prepared_moments_before_the_cancel_runs_and_its_part_is_kept(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    # Seen pending under a second ago: called without asking again; nothing after it runs.
    job = _run_three_chunks_cancelled_after_the_first_is_prepared(
        world, django_capture_on_commit_callbacks, monkeypatch
    )
    assert job.status == Job.Status.CANCELLED
    statuses = list(job.chunks.order_by("index").values_list("status", flat=True))
    assert statuses == ["succeeded", "skipped", "skipped"]
    assert job.records_done == 3  # the chunk's records, counted with its part
    assert world.container_counter.calls["/invocations"] == 1
    assert s3_keys(world, f"{JOBS_PREFIX_A}{job.pk}/part") == [
        f"{JOBS_PREFIX_A}{job.pk}/part-00000.jsonl"
    ]


# --- Bad input ------------------------------------------------------------------------------------


def _raw(data: bytes, name: str = "input.csv") -> io.BytesIO:
    upload = io.BytesIO(data)
    upload.name = name
    return upload


@pytest.mark.parametrize(
    ("upload", "status", "code"),
    [
        (_raw(b""), 400, "empty_input"),
        (_raw(b"email,phone\n"), 400, "empty_input"),
        (_raw(b"a@example.com,5550100\nb@example.com,5550101\n"), 400, "no_header"),
        (_raw(b"email;phone\na@example.com;5550100\n"), 400, "wrong_delimiter"),
        (_raw(b"email,phone\n\xff\xfeabc,1\n"), 400, "invalid_encoding"),
        (_raw(b"email,phone\n" + b"x" * 300 + b",1\n"), 400, "line_too_long"),
        (_raw(b'email,phone\n"a@example.com,1\n'), 400, "unclosed_quote"),
        (_raw(b"email,phone\na,b\n", "input.jsonl"), 400, "invalid_jsonlines"),
        (_raw(b"", "input.jsonl"), 400, "empty_input"),
        (_raw(b"\n \t\n", "input.jsonl"), 400, "empty_input"),
        (_raw(b'{"email": "a@example.com"}\n\xff\xfe\n', "input.jsonl"), 400, "invalid_encoding"),
        (_raw(b'{"email": "' + b"x" * 300 + b'"}\n', "input.jsonl"), 400, "line_too_long"),
        (_raw(b'{"email": "a@example.com"}\n' * 50, "input.jsonl"), 413, "input_too_large"),
        (_raw(b"email\n" + b"a@example.com\n" * 100), 413, "input_too_large"),
        (_raw(b'{"records": []}', "input.json"), 415, "unsupported_content_type"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_bad_input_is_refused_with_its_code_and_nothing_is_left(
    world: ProxyWorld,
    django_capture_on_commit_callbacks,
    settings,
    upload: io.BytesIO,
    status: int,
    code: str,
) -> None:
    settings.JOBS_MAX_LINE_BYTES = 200
    settings.JOBS_MAX_INPUT_BYTES = 1000
    upload.seek(0)
    response = submit(world, upload, capture=django_capture_on_commit_callbacks)

    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert not Job.objects.exists() and not JobChunk.objects.exists()
    assert s3_keys(world) == []
    refusal = AuditEvent.objects.get(action="job.submitted")
    assert refusal.outcome == AuditEvent.Outcome.REFUSED and refusal.reason == code


def test_an_oversized_api_upload_is_refused_413_without_spooling_past_the_limit(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings, monkeypatch
) -> None:
    # As the upload form: a file over the limit is not written to disk whole before its 413.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 64
    settings.JOBS_MAX_INPUT_BYTES = 1000
    spooled: list[tuple[int, int]] = []
    complete = TemporaryFileUploadHandler.file_complete

    def spy(self, file_size: int):
        spooled.append((self.file.tell(), file_size))
        return complete(self, file_size)

    monkeypatch.setattr(TemporaryFileUploadHandler, "file_complete", spy)
    big = csv_file(good_rows(300))

    response = submit(world, big, capture=django_capture_on_commit_callbacks)

    assert response.status_code == 413 and response.json()["code"] == "input_too_large"
    # One byte past the limit on disk, the true size known.
    assert spooled == [(1001, len(big.getvalue()))]
    assert not Job.objects.exists() and s3_keys(world) == []


@pytest.mark.parametrize(
    "uri",
    [
        f"s3://{BUCKET_A}/gatehouse/lob-b/uploads/x.csv",
        "s3://gatehouse-results-222222222222/gatehouse/lob-b/x.csv",
        f"s3://{BUCKET_A}/gatehouse/lob-a/../lob-b/x.csv",
        "https://example.com/x.csv",
    ],
)
def test_input_uri_outside_the_lobs_location_is_403(
    world: ProxyWorld, django_capture_on_commit_callbacks, uri: str
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = world.client("analyst").post(
            "/api/v1/jobs/",
            {"subscription": world.subscription_a.pk, "input_uri": uri, "content_type": "text/csv"},
            format="json",
        )
    assert response.status_code == 403
    assert response.json()["code"] == "input_outside_lob"
    assert not Job.objects.exists()


# --- Who may do what ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "status", "code"),
    [
        ("viewer", 403, "may_not_invoke"),
        ("other_lob_member", 404, "not_found"),
        ("non_member", 404, "not_found"),
        ("anonymous", 401, None),
    ],
)
def test_only_analysts_and_admins_of_the_lob_submit(
    world: ProxyWorld, django_capture_on_commit_callbacks, principal: str, status: int, code: Any
) -> None:
    response = submit(
        world,
        csv_file(good_rows(2)),
        principal=principal,
        capture=django_capture_on_commit_callbacks,
    )
    assert response.status_code == status
    if code:
        assert response.json()["code"] == code
        refusal = AuditEvent.objects.get(action="job.submitted")
        assert refusal.outcome == AuditEvent.Outcome.REFUSED and refusal.reason == code
    assert not Job.objects.exists()


def test_inactive_subscription_refuses_jobs(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    world.subscription_a.status = "cancelled"
    world.subscription_a.save()
    response = submit(world, csv_file(good_rows(2)), capture=django_capture_on_commit_callbacks)
    assert response.status_code == 403 and response.json()["code"] == "subscription_inactive"


@pytest.mark.parametrize("principal", ["other_lob_member", "non_member"])
def test_another_lobs_job_is_not_found_on_every_endpoint(
    world: ProxyWorld, django_capture_on_commit_callbacks, principal: str
) -> None:
    job_id = submit(
        world, csv_file(good_rows(4)), capture=django_capture_on_commit_callbacks
    ).json()["id"]
    client = world.client(principal)

    assert client.get("/api/v1/jobs/").json()["results"] == []
    for path in ("", "results/", "download/"):
        response = client.get(f"/api/v1/jobs/{job_id}/{path}")
        assert response.status_code == 404, path
    response = client.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert response.status_code == 404
    assert Job.objects.get(pk=job_id).status == Job.Status.SUCCEEDED
    assert not AuditEvent.objects.filter(action="job.downloaded").exists()


def test_jobs_list_pages_by_cursor_newest_first_and_filters_by_subscription(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    ids = [
        submit(
            world, csv_file(good_rows(2)), run=False, capture=django_capture_on_commit_callbacks
        ).json()["id"]
        for _ in range(3)
    ]
    client = world.client("analyst")

    first = client.get("/api/v1/jobs/?page_size=2").json()
    second = client.get(first["next"]).json()

    assert "cursor=" in first["next"] and first["previous"] is None
    assert [job["id"] for job in first["results"]] == ids[:0:-1]
    assert [job["id"] for job in second["results"]] == ids[:1] and second["next"] is None
    mine = client.get(f"/api/v1/jobs/?subscription={world.subscription_a.pk}").json()
    assert [job["id"] for job in mine["results"]] == ids[::-1]
    other = client.get(f"/api/v1/jobs/?subscription={world.subscription_b.pk}").json()
    assert other["results"] == []


def test_viewer_may_not_cancel_and_platform_admin_sees_every_job(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    response = submit(
        world, csv_file(good_rows(4)), run=False, capture=django_capture_on_commit_callbacks
    )
    job_id = response.json()["id"]
    refused = world.client("viewer").post(f"/api/v1/jobs/{job_id}/cancel/")
    assert refused.status_code == 403
    listed = world.client("platform_admin").get("/api/v1/jobs/").json()["results"]
    assert [item["id"] for item in listed] == [job_id]


def test_download_before_the_output_exists_is_409(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job_id = submit(
        world, csv_file(good_rows(4)), run=False, capture=django_capture_on_commit_callbacks
    ).json()["id"]
    response = world.client("analyst").get(f"/api/v1/jobs/{job_id}/download/")
    assert response.status_code == 409 and response.json()["code"] == "not_ready"


class _Stream:
    """A non-seekable source of ``size`` bytes, as a request body or the merge's parts are."""

    def __init__(self, size: int) -> None:
        self.left, self.digest = size, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        piece = bytes((self.left + n) % 251 for n in range(min(size, 64))) * (size // 64 + 1)
        piece = piece[:size]
        self.left -= len(piece)
        self.digest.update(piece)
        return piece


def test_a_stream_past_the_part_size_is_uploaded_in_parts_whole(world: ProxyWorld) -> None:
    stream = _Stream(2 * aws_gateway.STREAM_PART_BYTES + 12345)
    s3, key = world.s3(), f"{JOBS_PREFIX_A}stream/output.jsonl"

    jobs.common.upload(s3, BUCKET_A, key, stream, "application/jsonlines")

    stored = s3.get_object(Bucket=BUCKET_A, Key=key)
    body = stored["Body"].read()
    assert len(body) == 2 * aws_gateway.STREAM_PART_BYTES + 12345
    assert hashlib.sha256(body).hexdigest() == stream.digest.hexdigest()
    assert stored["ServerSideEncryption"] == "AES256"
    assert "-" in stored["ETag"]  # a multipart upload's ETag names its parts


def test_job_prefix_is_under_the_lobs_results_location(world: ProxyWorld) -> None:
    assert jobs.job_prefix(world.subscription_a, "x") == "gatehouse/lob-a/jobs/x/"


# --- Reading the model's answer and the chunk's input, fast and exactly ---------------------------


def _parsed_line_by_line(answer: bytes) -> list[dict]:
    """What a JSON Lines answer means: json.loads on each line, objects kept, the rest skipped."""
    results = []
    for line in answer.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            results.append(value)
    return results


@pytest.mark.parametrize(
    "answer",
    [
        b'{"record":0,"ids":{"email":"ab"}}\n{"record":1,"error":"invalid_email"}\n',
        b'\n  {"a": 1}  \n\t\n{"b":[1,2,{"c":null}]}',  # blank lines, spaces, no final break
        b'{"a":1}\r\n{"b":2}\r\n',  # CRLF
        b'{"a":1}\r{"b":2}\n',  # a bare CR ends a line too
        b'\xef\xbb\xbf{"a":1}\n{"b":2}\n',  # a byte-order mark
        b'[1,2]\n"text"\n3\nnull\n{"kept":true}\n',  # values that are not objects
        b'{"a":1} trailing\n{"a":1}{"b":2}\n{"open":\n',  # not one JSON value
        b'{"a":"\xff"}\n{"b":2}\n',  # not UTF-8
        b'{"a":1}\n\x0c\n\x0b{"b":2}\n',  # form feed and vertical tab are not JSON spaces
        '{"a":"x\u2028y","b":"\\"record\\""}\n'.encode(),  # a raw line separator in a string
        b'\x00{"a":1}\n{"b":2}\n',  # NUL
        # Lines that are not JSON alone but would be as one array: each is still skipped.
        b'{"a":[{"b":1}\n{"c":2}]}\n{"x":1},{"y":2}\n',
    ],
)
def test_the_answer_is_read_as_json_loads_reads_each_line(answer: bytes) -> None:
    from subscriptions.services import job_input

    pairs = list(job_input.answer_lines(answer))

    assert [value for _text, value in pairs] == _parsed_line_by_line(answer)
    assert all(text == "" or json.loads(text) == value for text, value in pairs)


@pytest.mark.parametrize(
    "line",
    [
        '{"record":0,"ids":{"email":"ab","phone":"cd"}}',
        '{"record": 0, "ids": {"email": "ab"}}',
        '{"ids":{"email":"ab"},"record":0}',
        '{"record":0,"line":99,"ids":{}}',
        '{"record":0,"ids":{},"record":5}',
        '{"record":0,"note":"a \\"record\\" here, and a comma"}',
        '{"record":0,"error":"invalid_phone"}',
        '{"record":0}',
        '{"record":1.5,"a":1}',
        '{"record":"7","a":1}',
        '{"record":0,"name":"Zo\u00eb","name2":"Zoë"}',
        '{"other":1}',
    ],
)
def test_each_part_line_is_the_models_result_with_the_records_number_and_line(line: str) -> None:
    from subscriptions.services import job_input

    chunk = JobChunk(first_record=40, record_count=1)
    records = job_input.ChunkRecords(payload=b"", lines=[57])
    result = json.loads(line)

    output = jobs.parts.chunk_output(chunk, records, line.encode() + b"\n")

    expected = {"record": 40, "line": 57}
    expected.update((k, v) for k, v in result.items() if k not in ("record", "line"))
    (written,) = output.body.decode().splitlines()
    assert list(json.loads(written).items()) == list(expected.items())
    assert output.records_failed == ("error" in result)


@pytest.mark.parametrize(
    "answer",
    [
        b'{"record":0,"ids":{}}\n',  # one result short
        b'{"record":0,"ids":{}}\n{"record":1,"ids":{}}\n{"record":2,"ids":{}}\n',  # one over
        b'{"record":0,"ids":{}}\nnot json\n',  # a line that is not a result
    ],
)
def test_an_answer_without_one_result_per_record_fails_the_chunk_as_a_mismatch(
    answer: bytes,
) -> None:
    from subscriptions.errors import ModelFailed
    from subscriptions.services import job_input

    chunk = JobChunk(first_record=0, record_count=2)
    records = job_input.ChunkRecords(payload=b"", lines=[2, 3])

    with pytest.raises(ModelFailed) as refused:
        jobs.parts.chunk_output(chunk, records, answer)

    assert refused.value.code == "output_mismatch"


def _records_line_by_line(data: bytes, media_type: str, csv_header: str, first_line: int):
    """A chunk's records found line by line: blank lines skipped, CSV quotes spanning lines."""
    from subscriptions.services import job_input

    records, lines, record, record_line, in_quotes = [], [], [], first_line, False
    parts = data.split(b"\n")
    raw_lines = [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    for number, raw in enumerate(raw_lines, start=first_line):
        if media_type == job_input.CSV:
            if not in_quotes:
                if not raw.strip():
                    continue
                record_line = number
            record.append(raw)
            if raw.count(b'"') % 2:
                in_quotes = not in_quotes
            if not in_quotes:
                joined = b"".join(record)
                records.append(joined if joined.endswith(b"\n") else joined + b"\n")
                lines.append(record_line)
                record = []
        elif raw.strip():
            records.append(raw if raw.endswith(b"\n") else raw + b"\n")
            lines.append(number)
    prefix = csv_header.encode() if media_type == job_input.CSV else b""
    return job_input.ChunkRecords(payload=prefix + b"".join(records), lines=lines)


@pytest.mark.parametrize(
    ("media_type", "data"),
    [
        ("text/csv", b"a@example.com,1\nb@example.com,2\n"),
        ("text/csv", b"a@example.com,1\nb@example.com,2"),  # no final line break
        ("text/csv", b"a@example.com,1\r\nb@example.com,2\r\n"),
        ("text/csv", b"a@example.com,1\n\nb@example.com,2\n"),  # a blank line
        ("text/csv", b"a@example.com,1\n \t\r\nb@example.com,2\n"),  # spaces only
        ("text/csv", b"\x0c\na@example.com,1\n"),  # a form feed only, first
        ("text/csv", b'"a@example.com","x\ny"\nb@example.com,2\n'),  # a quoted line break
        ("text/csv", b'a@example.com,"1"\nb@example.com,2\n'),
        ("application/jsonlines", b'{"email":"a"}\n{"email":"b"}\n'),
        ("application/jsonlines", b'{"email":"a"}\n\n{"email":"b"}'),
    ],
)
def test_a_chunks_records_and_line_numbers_are_found_as_line_by_line(
    media_type: str, data: bytes
) -> None:
    from subscriptions.services import job_input

    found = job_input.chunk_records(
        data=data, media_type=media_type, csv_header="email,phone\n", first_line=7
    )

    assert found == _records_line_by_line(data, media_type, "email,phone\n", 7)


# --- Never lose work: how the tasks are delivered -------------------------------------------------


def test_job_tasks_are_acked_late_and_end_before_redis_delivers_them_again() -> None:
    visibility = celery_app.conf.broker_transport_options["visibility_timeout"]
    assert celery_app.conf.task_acks_late and celery_app.conf.task_reject_on_worker_lost
    job_tasks = (
        tasks.job_start,
        tasks.job_chunk_run,
        tasks.job_chunks_run,
        tasks.job_finalize,
        tasks.jobs_reconcile,
    )
    for task in job_tasks:
        assert task.acks_late is True, task.name
        assert task.soft_time_limit < task.time_limit < visibility, task.name
    entry = django_settings.CELERY_BEAT_SCHEDULE["reconcile-jobs"]
    assert entry["task"] == tasks.jobs_reconcile.name
    assert entry["schedule"] == float(django_settings.JOBS_RECONCILE_INTERVAL_SECONDS)
