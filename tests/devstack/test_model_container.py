"""The model container stand-in: SageMaker's container contract and the identity transcoder."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import time
from collections.abc import Iterator

import pytest
import requests

from devstack.model_container import (
    DEMO_MASTER_KEY,
    build_parser,
    create_app,
    normalize_email,
    normalize_maid,
    normalize_phone,
)
from devstack.wsgi_thread import ThreadedServer, serve_in_thread

MASTER_KEY = b"test master key for the container"
JSON = "application/json"
JSONL = "application/jsonlines"
CSV = "text/csv"


def expected_id(kind: str, normalized: str, domain: str, master_key: bytes = MASTER_KEY) -> str:
    """The contract's formula, written out independently of the implementation."""
    domain_key = hmac.new(master_key, domain.encode(), hashlib.sha256).digest()
    message = f"{kind}:{normalized}".encode()
    return hmac.new(domain_key, message, hashlib.sha256).hexdigest()[:32]


# --- Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def container() -> Iterator[ThreadedServer]:
    """One container for the module; knobs are reset before each test."""
    with serve_in_thread(create_app(master_key=MASTER_KEY)) as server:
        yield server


@pytest.fixture
def http(container: ThreadedServer) -> Iterator[requests.Session]:
    """A session, with the container's knobs back at zero."""
    with requests.Session() as session:
        reset = {"latency_ms": 0, "error_rate": 0, "throttle_rate": 0}
        session.put(f"{container.url}/_stand-in/knobs", json=reset, timeout=5).raise_for_status()
        yield session


def invoke(
    http: requests.Session,
    container: ThreadedServer,
    body: bytes | str,
    content_type: str | None,
    accept: str | None = None,
    domain: str | None = "acme",
) -> requests.Response:
    """POST /invocations with the SageMaker headers."""
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if accept:
        headers["Accept"] = accept
    if domain is not None:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = f"domain={domain}"
    if isinstance(body, str):
        body = body.encode()
    return http.post(f"{container.url}/invocations", data=body, headers=headers, timeout=10)


def jsonl(records: list[object]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


# --- Ping --------------------------------------------------------------------------------------


def test_ping_answers_200_with_an_empty_body(container: ThreadedServer, http) -> None:
    response = http.get(f"{container.url}/ping", timeout=5)
    assert response.status_code == 200
    assert response.content == b""


# --- Ids ---------------------------------------------------------------------------------------


def test_json_records_get_ids_by_the_contract_formula_in_input_order(container, http) -> None:
    body = {
        "records": [
            {"email": "Jane.Doe@Example.com", "phone": "(555) 123-4567"},
            {"maid": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "name": "ignored"},
        ]
    }
    response = invoke(http, container, json.dumps(body), JSON)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == JSON
    assert response.json() == {
        "results": [
            {
                "record": 0,
                "ids": {
                    "email": expected_id("email", "jane.doe@example.com", "acme"),
                    "phone": expected_id("phone", "+15551234567", "acme"),
                },
            },
            {
                "record": 1,
                "ids": {
                    "maid": expected_id("maid", "6d92078a-8246-4ba4-ae5b-76104861e7dc", "acme")
                },
            },
        ]
    }


def test_equivalent_spellings_of_an_identifier_get_the_same_id(container, http) -> None:
    records = [
        {"email": " John.Doe+news@GMail.com "},
        {"email": "johndoe@gmail.com"},
        {"email": "john.doe@example.com"},
        {"email": "johndoe@example.com"},
        {"phone": "+1 (555) 123-4567"},
        {"phone": "555.123.4567"},
        {"phone": 5551234567},
        {"maid": "6d92078a82464ba4ae5b76104861e7dc"},
        {"maid": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
    ]
    results = invoke(http, container, json.dumps(records), JSON).json()["results"]
    ids = [next(iter(result["ids"].values())) for result in results]
    assert ids[0] == ids[1] == expected_id("email", "johndoe@gmail.com", "acme")
    # Dots only collapse for gmail.com; elsewhere they are part of the mailbox.
    assert ids[2] != ids[3]
    assert ids[4] == ids[5] == ids[6] == expected_id("phone", "+15551234567", "acme")
    assert ids[7] == ids[8]


def test_each_buyer_domain_gets_unlinkable_ids(container, http) -> None:
    body = json.dumps([{"email": "jane@example.com"}])

    def email_id(domain: str | None) -> str:
        return invoke(http, container, body, JSON, domain=domain).json()["results"][0]["ids"][
            "email"
        ]

    assert email_id("acme") != email_id("globex")
    assert (
        email_id(None) == email_id("default") == expected_id("email", "jane@example.com", "default")
    )


def test_the_domain_is_read_among_other_custom_attributes_and_echoed(container, http) -> None:
    response = http.post(
        f"{container.url}/invocations",
        data=json.dumps([{"email": "jane@example.com"}]),
        headers={
            "Content-Type": JSON,
            "X-Amzn-SageMaker-Custom-Attributes": "trace=abc, domain=globex",
        },
        timeout=5,
    )
    assert response.json()["results"][0]["ids"]["email"] == expected_id(
        "email", "jane@example.com", "globex"
    )
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "domain=globex"


def test_a_different_master_key_gives_different_ids() -> None:
    body = json.dumps([{"email": "jane@example.com"}])
    with serve_in_thread(create_app(master_key=DEMO_MASTER_KEY)) as other:
        answer = requests.post(
            f"{other.url}/invocations", data=body, headers={"Content-Type": JSON}, timeout=5
        )
    email_id = answer.json()["results"][0]["ids"]["email"]
    assert email_id == expected_id("email", "jane@example.com", "default", DEMO_MASTER_KEY)
    assert email_id != expected_id("email", "jane@example.com", "default", MASTER_KEY)


# --- Per-record errors -------------------------------------------------------------------------


def test_bad_records_get_an_error_and_the_rest_of_the_batch_goes_on(container, http) -> None:
    records = [
        {"email": "not-an-email"},
        {"phone": "12345"},
        {"phone": "555-CALL-NOW"},
        {"maid": "not-a-uuid"},
        {"maid": "00000000-0000-0000-0000-000000000000"},
        {"name": "no identifiers", "email": "", "phone": None},
        "a string, not a record",
        {"email": "jane@example.com", "phone": "garbage"},
        {"email": "+only@gmail.com"},
        {"email": "ok@example.com"},
    ]
    results = invoke(http, container, json.dumps(records), JSON).json()["results"]
    assert [result.get("error") for result in results] == [
        "invalid_email",
        "invalid_phone",
        "invalid_phone",
        "invalid_maid",
        "invalid_maid",
        "no_identifier",
        "invalid_record",
        "invalid_phone",
        "invalid_email",
        None,
    ]
    assert [result["record"] for result in results] == list(range(10))
    assert results[-1]["ids"] == {"email": expected_id("email", "ok@example.com", "acme")}
    # A refused record carries no ids at all.
    assert all("ids" not in result for result in results[:-1])


def test_raw_identifiers_are_never_echoed(container, http) -> None:
    records = [
        {"email": "secret.person@example.com", "phone": "+44 20 7946 0958"},
        {"email": "broken@@example.com"},
        {"maid": "zzzz-secret-maid"},
    ]
    for accept in (JSON, JSONL, CSV):
        text = invoke(http, container, json.dumps(records), JSON, accept=accept).text
        for secret in ("secret.person", "7946", "broken", "zzzz", "example.com"):
            assert secret not in text


# --- Formats -----------------------------------------------------------------------------------


def test_csv_in_answers_jsonlines_by_default_and_ignores_other_columns(container, http) -> None:
    body = "Name,EMAIL,Phone\r\nJane,jane@example.com,5551234567\r\n\r\nNo One,,\r\n"
    response = invoke(http, container, body, CSV)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == JSONL
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines == [
        {
            "record": 0,
            "ids": {
                "email": expected_id("email", "jane@example.com", "acme"),
                "phone": expected_id("phone", "+15551234567", "acme"),
            },
        },
        {"record": 1, "error": "no_identifier"},
    ]


def test_csv_out_has_the_contract_columns(container, http) -> None:
    body = "email,maid\njane@example.com,\n,bad\n"
    response = invoke(http, container, body, CSV, accept=CSV)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CSV
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows == [
        ["record", "email_id", "phone_id", "maid_id", "error"],
        ["0", expected_id("email", "jane@example.com", "acme"), "", "", ""],
        ["1", "", "", "", "invalid_maid"],
    ]


def test_jsonlines_in_and_out_skip_blank_lines_and_flag_bad_lines(container, http) -> None:
    body = '{"email": "jane@example.com"}\n\n[1, 2]\nnot json\n{"phone": "5551234567"}\n'
    response = invoke(http, container, body, JSONL)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == JSONL
    results = [json.loads(line) for line in response.text.splitlines()]
    assert [result["record"] for result in results] == [0, 1, 2, 3]
    assert [result.get("error") for result in results] == [
        None,
        "invalid_record",
        "invalid_record",
        None,
    ]


def test_jsonlines_lines_end_at_line_feeds_only(container, http) -> None:
    # A JSON string may hold U+2028 and a line may hold a bare CR: str.splitlines() would break
    # there and answer more results than the caller sent lines.
    body = (
        '{"email": "jane@example.com", "n": "a\u2028b"}\n{"email": "x@example.com"}\r{}\n\u00a0\n'
    )
    response = invoke(http, container, body, JSONL)
    assert response.status_code == 200
    results = [json.loads(line) for line in response.text.splitlines()]
    assert [result.get("error") for result in results] == [
        None,
        "invalid_record",
        "invalid_record",
    ]


def test_json_in_with_accept_jsonlines_and_wildcard_accept(container, http) -> None:
    body = json.dumps({"records": [{"email": "jane@example.com"}]})
    as_lines = invoke(http, container, body, JSON, accept=JSONL)
    assert as_lines.headers["Content-Type"] == JSONL
    assert json.loads(as_lines.text.strip())["record"] == 0
    wildcard = invoke(http, container, body, JSON, accept="*/*")
    assert wildcard.headers["Content-Type"] == JSON
    assert wildcard.json()["results"][0]["record"] == 0


def test_content_type_parameters_are_tolerated(container, http) -> None:
    response = invoke(http, container, "email\njane@example.com\n", "text/csv; charset=utf-8")
    assert response.status_code == 200
    assert json.loads(response.text)["record"] == 0


def test_an_empty_batch_answers_no_results(container, http) -> None:
    assert invoke(http, container, "[]", JSON).json() == {"results": []}
    assert invoke(http, container, "email,phone\n", CSV).text == ""


# --- Whole-body errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("{not json", JSON, 400, "invalid_json"),
        ('{"rows": []}', JSON, 400, "invalid_json"),
        ('"a string"', JSON, 400, "invalid_json"),
        ("", CSV, 400, "invalid_csv"),
        ("jane@example.com,5551234567\n", CSV, 400, "invalid_csv"),
        (b"\xff\xfe\x00email", CSV, 400, "invalid_csv"),
        ("email\njane@example.com\n", "application/xml", 415, "unsupported_media_type"),
        ("email\njane@example.com\n", None, 415, "unsupported_media_type"),
    ],
)
def test_unparseable_bodies_are_refused_whole(
    container, http, body: str | bytes, content_type: str | None, status: int, code: str
) -> None:
    response = invoke(http, container, body, content_type)
    assert response.status_code == status
    assert response.headers["Content-Type"] == JSON
    assert response.json()["error"] == code
    assert response.json()["message"]


def test_an_accept_naming_no_supported_type_is_refused(container, http) -> None:
    response = invoke(http, container, "[]", JSON, accept="application/xml")
    assert response.status_code == 406
    assert response.json()["error"] == "not_acceptable"


# --- Knobs -------------------------------------------------------------------------------------


def test_throttle_knob_answers_429(container, http) -> None:
    put = http.put(f"{container.url}/_stand-in/knobs", json={"throttle_rate": 1}, timeout=5)
    assert put.json() == {"latency_ms": 0, "error_rate": 0, "throttle_rate": 1}
    response = invoke(http, container, "[]", JSON)
    assert response.status_code == 429
    assert response.json() == {"error": "throttled"}
    # Health checks are not invocations: the knobs leave them alone.
    assert http.get(f"{container.url}/ping", timeout=5).status_code == 200


def test_error_knob_answers_500(container, http) -> None:
    http.put(f"{container.url}/_stand-in/knobs", json={"error_rate": 1.0}, timeout=5)
    response = invoke(http, container, "[]", JSON)
    assert response.status_code == 500
    assert response.json() == {"error": "internal"}


def test_latency_knob_delays_each_invocation(container, http) -> None:
    http.put(f"{container.url}/_stand-in/knobs", json={"latency_ms": 300}, timeout=5)
    started = time.monotonic()
    response = invoke(http, container, "[]", JSON)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_knobs_can_be_read_back(container, http) -> None:
    http.put(f"{container.url}/_stand-in/knobs", json={"error_rate": 0.25}, timeout=5)
    assert http.get(f"{container.url}/_stand-in/knobs", timeout=5).json() == {
        "latency_ms": 0,
        "error_rate": 0.25,
        "throttle_rate": 0,
    }


@pytest.mark.parametrize(
    "body",
    [{"error_rate": 2}, {"latency_ms": -1}, {"throttle_rate": "high"}, {"speed": 1}, [1]],
)
def test_invalid_knobs_are_refused_and_change_nothing(container, http, body: object) -> None:
    response = http.put(f"{container.url}/_stand-in/knobs", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert http.get(f"{container.url}/_stand-in/knobs", timeout=5).json() == {
        "latency_ms": 0,
        "error_rate": 0,
        "throttle_rate": 0,
    }


def test_knobs_given_to_create_app_apply_from_the_start() -> None:
    app = create_app(master_key=MASTER_KEY, throttle_rate=1.0)
    with serve_in_thread(app) as server:
        response = requests.post(
            f"{server.url}/invocations", data="[]", headers={"Content-Type": JSON}, timeout=5
        )
    assert response.status_code == 429


def test_create_app_refuses_invalid_knobs_and_an_empty_key() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        create_app(master_key=MASTER_KEY, error_rate=1.5)
    with pytest.raises(ValueError, match="master key"):
        create_app(master_key=b"")


# --- Normalizers and CLI -----------------------------------------------------------------------


def test_normalizers() -> None:
    assert normalize_email("  J.Doe+x@GoogleMail.com ") == "j.doe+x@googlemail.com"
    assert normalize_email("j.o.h.n+tag@gmail.com") == "john@gmail.com"
    assert normalize_email("two@@example.com") is None
    assert normalize_email("nodomain@localhost") is None
    assert normalize_phone("+44 20 7946 0958") == "+442079460958"
    assert normalize_phone("+49 30 123456") == "+4930123456"  # "+" means: country code given
    assert normalize_phone("1-555-123-4567") == "+15551234567"
    assert normalize_phone("0044 20 7946 0958") is None
    assert normalize_phone(True) is None
    assert normalize_maid("{6d92078a-8246-4ba4-ae5b-76104861e7dc}") is None
    assert normalize_maid("6D92078A82464BA4AE5B76104861E7DC") == (
        "6d92078a-8246-4ba4-ae5b-76104861e7dc"
    )


def test_cli_defaults_to_the_demo_key_and_reads_knobs_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GATEHOUSE_MODEL_THROTTLE_RATE", "0.5")
    args = build_parser().parse_args([])
    assert args.port == 8120
    assert args.master_key_hex == DEMO_MASTER_KEY
    assert args.throttle_rate == 0.5
    args = build_parser().parse_args(["--master-key-hex", "00ff", "--latency-ms", "20"])
    assert args.master_key_hex == b"\x00\xff"
    assert args.latency_ms == 20
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--master-key-hex", "not hex"])
