"""A local stand-in for the seller's model container: SageMaker's inference contract.

The "model" is a privacy-safe identity transcoder. For every record it normalizes the
identifiers it carries (email, phone, mobile advertising id) and answers a pseudonymous id per
identifier: ``HMAC-SHA256(key=HMAC-SHA256(master_key, domain), msg=f"{kind}:{normalized}")`` in
hex, truncated to 32 characters. The buyer's domain comes from SageMaker's custom-attributes
header, so two buyers get unlinkable ids for the same person. Raw identifiers are never echoed,
not even in error messages.

Endpoints (SageMaker's container contract, plus knobs for tests):

* ``GET /ping`` – 200, empty body.
* ``POST /invocations`` – ``text/csv``, ``application/json`` or ``application/jsonlines`` in and
  out (``Accept``), ``X-Amzn-SageMaker-Custom-Attributes: domain=<buyer-domain>``.
* ``GET``/``PUT /_stand-in/knobs`` – latency, error and throttle injection.

Run it with ``python -m devstack.model_container --port 8120``.
"""

from __future__ import annotations

import argparse
import csv
import hmac
import io
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from flask import Flask, Response, request
from werkzeug.serving import make_server

from devstack.wsgi_thread import PathOnlyRequestHandler

log = logging.getLogger(__name__)

DEFAULT_PORT = 8120
DEFAULT_DOMAIN = "default"
# A fixed key so that the demo's pseudonymous ids are stable across restarts. It is published in
# this file and therefore protects nothing: it is for the local demo only, never for real data.
DEMO_MASTER_KEY_HEX = "f81dd0f63e93a01b5fb9aa24d194228aa09f64b67df499d65d5b5abedc2cd189"
DEMO_MASTER_KEY = bytes.fromhex(DEMO_MASTER_KEY_HEX)

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
CONTENT_TYPES = (CSV, JSON, JSONLINES)
# The answer's type when the caller does not ask for one.
DEFAULT_ACCEPT = {CSV: JSONLINES, JSON: JSON, JSONLINES: JSONLINES}

KINDS = ("email", "phone", "maid")
CSV_OUTPUT_HEADER = ("record", "email_id", "phone_id", "maid_id", "error")
ID_LENGTH = 32
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"

# Environment variables the CLI reads its defaults from (flags win).
ENV_MASTER_KEY_HEX = "GATEHOUSE_MODEL_MASTER_KEY_HEX"
ENV_LATENCY_MS = "GATEHOUSE_MODEL_LATENCY_MS"
ENV_ERROR_RATE = "GATEHOUSE_MODEL_ERROR_RATE"
ENV_THROTTLE_RATE = "GATEHOUSE_MODEL_THROTTLE_RATE"

# One encoder for all answers: json.dumps with non-default options builds a new encoder per call,
# which costs more than encoding a small result object.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


# --- Normalization -----------------------------------------------------------------------------

# Deliberately loose (one @, a dotted domain, no whitespace): the point is to refuse garbage,
# not to implement RFC 5322.
_EMAIL_SHAPE = re.compile(r"[^\s@]+@[^\s@.]+(?:\.[^\s@.]+)+")
_GMAIL_DOMAIN = "gmail.com"
# Digits plus the punctuation people write phone numbers with; letters make a value invalid.
_PHONE_SHAPE = re.compile(r"\+?[0-9 ().\-/]+")
_NOT_DIGIT = re.compile(r"[^0-9]")
_MAID_SHAPE = re.compile(
    r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
# iOS and Android hand out the all-zero id when the user opted out of tracking: it names nobody.
_OPTED_OUT_MAID = "00000000-0000-0000-0000-000000000000"


def normalize_email(value: object) -> str | None:
    """Trimmed, lowercased email; for gmail.com, dots and a ``+tag`` removed. None if invalid."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if not _EMAIL_SHAPE.fullmatch(email):
        return None
    local, _, domain = email.partition("@")
    if domain == _GMAIL_DOMAIN:
        # Gmail ignores dots and everything after "+" in the mailbox name.
        local = local.partition("+")[0].replace(".", "")
        if not local:
            return None
        return f"{local}@{domain}"
    return email


def normalize_phone(value: object) -> str | None:
    """E.164 (``+`` and digits); 10 digits without ``+`` get country code 1. None if invalid.

    A leading ``+`` means the number already carries its country code, so the default country
    is applied only to bare 10-digit numbers.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not _PHONE_SHAPE.fullmatch(text):
        return None
    digits = _NOT_DIGIT.sub("", text)
    if not text.startswith("+") and len(digits) == 10:
        digits = "1" + digits
    # E.164: at most 15 digits, and no country code starts with 0.
    if not 8 <= len(digits) <= 15 or digits[0] == "0":
        return None
    return "+" + digits


def normalize_maid(value: object) -> str | None:
    """Lowercase hyphenated UUID form of a mobile advertising id. None if invalid or zeroed."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if not _MAID_SHAPE.fullmatch(text):
        return None
    if len(text) == 32:
        text = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    if text == _OPTED_OUT_MAID:
        return None
    return text


def _absent(value: object) -> bool:
    """Missing, null, or an empty/blank string: the record simply does not carry this kind."""
    return value is None or (isinstance(value, str) and not value.strip())


# --- The transcoder ----------------------------------------------------------------------------

# One record as the parsers hand it over: (email, phone, maid), or None for an element that is
# not a record at all (a JSON list element or a JSON line that is not an object).
RawRecord = tuple[object, object, object] | None


class Transcoder:
    """Turns raw identifiers into per-domain pseudonymous ids."""

    def __init__(self, master_key: bytes) -> None:
        if not master_key:
            raise ValueError("the master key must not be empty")
        self._master_key = master_key
        self._domain_keys: dict[str, bytes] = {}

    def domain_key(self, domain: str) -> bytes:
        """HMAC-SHA256(master_key, domain), computed once per domain."""
        key = self._domain_keys.get(domain)
        if key is None:
            key = hmac.new(self._master_key, domain.encode("utf-8"), "sha256").digest()
            # A race only computes the same value twice; dict assignment is atomic.
            self._domain_keys[domain] = key
        return key

    def transcode(self, records: Iterable[RawRecord], domain: str) -> list[dict[str, Any]]:
        """One result per record, in input order: ``{"record", "ids"}`` or ``{"record", "error"}``.

        A record is refused as a whole when any identifier it carries is invalid, so that a
        typo never silently drops an identifier from a match.
        """
        key = self.domain_key(domain)
        new_hmac = hmac.new
        results: list[dict[str, Any]] = []
        append = results.append
        for index, record in enumerate(records):
            if record is None:
                append({"record": index, "error": "invalid_record"})
                continue
            email, phone, maid = record
            ids: dict[str, str] = {}
            error = None
            if not _absent(email):
                normalized = normalize_email(email)
                if normalized is None:
                    error = "invalid_email"
                else:
                    ids["email"] = new_hmac(
                        key, b"email:" + normalized.encode(), "sha256"
                    ).hexdigest()[:ID_LENGTH]
            if error is None and not _absent(phone):
                normalized = normalize_phone(phone)
                if normalized is None:
                    error = "invalid_phone"
                else:
                    ids["phone"] = new_hmac(
                        key, b"phone:" + normalized.encode(), "sha256"
                    ).hexdigest()[:ID_LENGTH]
            if error is None and not _absent(maid):
                normalized = normalize_maid(maid)
                if normalized is None:
                    error = "invalid_maid"
                else:
                    ids["maid"] = new_hmac(
                        key, b"maid:" + normalized.encode(), "sha256"
                    ).hexdigest()[:ID_LENGTH]
            if error is None and not ids:
                error = "no_identifier"
            if error is None:
                append({"record": index, "ids": ids})
            else:
                append({"record": index, "error": error})
        return results


# --- Parsing and rendering ---------------------------------------------------------------------


class BadBody(Exception):
    """A body that cannot be parsed at all; answered 400 (or ``status``) with a JSON error."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _decode(body: bytes, code: str) -> str:
    """UTF-8 text of the body (a BOM is tolerated: spreadsheets write one)."""
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadBody(code, "the body is not valid UTF-8") from None


def _record_of(item: object) -> RawRecord:
    """The identifiers of one JSON element; None when it is not an object."""
    if not isinstance(item, dict):
        return None
    return (item.get("email"), item.get("phone"), item.get("maid"))


def parse_json(body: bytes) -> list[RawRecord]:
    """``{"records": [...]}`` or a bare list of objects."""
    try:
        document = json.loads(_decode(body, "invalid_json"))
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: the message never quotes the document.
        raise BadBody(
            "invalid_json", f"the body is not JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if isinstance(document, dict):
        document = document.get("records")
    if not isinstance(document, list):
        raise BadBody("invalid_json", 'expected {"records": [...]} or a list of objects')
    return [_record_of(item) for item in document]


def parse_jsonlines(body: bytes) -> list[RawRecord]:
    """One JSON object per line; blank lines are not records, a bad line is a bad record.

    Lines end at "\n" only (JSON Lines' rule): ``str.splitlines`` would also break at a bare
    "\r", U+2028 and other characters a JSON string may hold, and answer more results than lines.
    """
    records: list[RawRecord] = []
    for line in _decode(body, "invalid_jsonlines").split("\n"):
        if not line.strip(" \t\r"):
            continue
        try:
            records.append(_record_of(json.loads(line)))
        except json.JSONDecodeError:
            records.append(None)
    return records


def parse_csv(body: bytes) -> list[RawRecord]:
    """A header row naming some of ``email``, ``phone``, ``maid`` (other columns ignored)."""
    reader = csv.reader(io.StringIO(_decode(body, "invalid_csv"), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise BadBody("invalid_csv", "the body is empty: a header row is required")
        columns = [name.strip().lower() for name in header]
        positions = [columns.index(kind) if kind in columns else -1 for kind in KINDS]
        if positions == [-1, -1, -1]:
            raise BadBody(
                "invalid_csv", "the header row names none of the columns email, phone, maid"
            )
        email_at, phone_at, maid_at = positions
        records: list[RawRecord] = []
        append = records.append
        for row in reader:
            if not row:
                continue  # a blank line is not a record
            width = len(row)
            append(
                (
                    row[email_at] if 0 <= email_at < width else None,
                    row[phone_at] if 0 <= phone_at < width else None,
                    row[maid_at] if 0 <= maid_at < width else None,
                )
            )
    except csv.Error as exc:
        raise BadBody("invalid_csv", f"the body is not CSV ({exc})") from None
    return records


PARSERS = {CSV: parse_csv, JSON: parse_json, JSONLINES: parse_jsonlines}


def render_json(results: list[dict[str, Any]]) -> str:
    """``{"results": [...]}``."""
    return _encode_json({"results": results})


def render_jsonlines(results: list[dict[str, Any]]) -> str:
    """One result object per line."""
    encode = _encode_json
    return "".join([encode(result) + "\n" for result in results])


def render_csv(results: list[dict[str, Any]]) -> str:
    """Columns ``record,email_id,phone_id,maid_id,error``; empty cells where nothing applies."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_OUTPUT_HEADER)
    rows = []
    for result in results:
        ids = result.get("ids") or {}
        rows.append(
            (
                result["record"],
                ids.get("email", ""),
                ids.get("phone", ""),
                ids.get("maid", ""),
                result.get("error", ""),
            )
        )
    writer.writerows(rows)
    return buffer.getvalue()


RENDERERS = {CSV: render_csv, JSON: render_json, JSONLINES: render_jsonlines}


def domain_from_custom_attributes(header: str | None) -> str:
    """The ``domain=`` value of a custom-attributes header (pairs split by ``,`` or ``;``)."""
    for part in re.split(r"[,;]", header or ""):
        name, sep, value = part.partition("=")
        if sep and name.strip().lower() == "domain" and value.strip():
            return value.strip()
    return DEFAULT_DOMAIN


# --- Knobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """Fault injection for tests and demos; all zero means a well-behaved model."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    throttle_rate: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError unless latency is >= 0 and both rates are fractions in [0, 1]."""
        for name in ("latency_ms", "error_rate", "throttle_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        for name in ("error_rate", "throttle_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


class KnobBox:
    """The container's current knobs, replaced atomically by ``PUT /_stand-in/knobs``."""

    def __init__(self, knobs: Knobs) -> None:
        self._lock = threading.Lock()
        self._knobs = knobs

    @property
    def current(self) -> Knobs:
        """The knobs in force (a frozen snapshot: an update replaces it whole)."""
        return self._knobs

    def update(self, changes: dict[str, Any]) -> Knobs:
        """Apply some of the knobs; raises ValueError (nothing changed) when one is invalid."""
        unknown = set(changes) - {"latency_ms", "error_rate", "throttle_rate"}
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(sorted(unknown))}")
        with self._lock:
            knobs = Knobs(**{**asdict(self._knobs), **changes})
            self._knobs = knobs
        return knobs


# --- The app -----------------------------------------------------------------------------------


def _error(status: int, code: str, message: str | None = None) -> Response:
    """A JSON error body ``{"error": code[, "message": ...]}``."""
    body: dict[str, str] = {"error": code}
    if message:
        body["message"] = message
    return Response(json.dumps(body), status=status, mimetype=JSON)


def _chosen_accept(content_type: str) -> str | None:
    """The answer's type from the Accept header; None when it names none of the three."""
    accept = request.accept_mimetypes
    default = DEFAULT_ACCEPT[content_type]
    if not accept:
        return default
    # The default first, so that "*/*" (what most HTTP clients send) picks it.
    ordered = [default, *(kind for kind in CONTENT_TYPES if kind != default)]
    return accept.best_match(ordered)


def create_app(
    *,
    master_key: bytes,
    latency_ms: float = 0,
    error_rate: float = 0.0,
    throttle_rate: float = 0.0,
) -> Flask:
    """The model container: ``/ping``, ``/invocations`` and the knobs endpoint."""
    app = Flask(__name__)
    transcoder = Transcoder(master_key)
    knobs = KnobBox(
        Knobs(latency_ms=latency_ms, error_rate=error_rate, throttle_rate=throttle_rate)
    )
    app.extensions["model_container"] = {"transcoder": transcoder, "knobs": knobs}
    # Fault injection is not a security decision: a plain PRNG is the right tool.
    chance = random.Random()  # noqa: S311

    @app.get("/ping")
    def ping() -> Response:
        """SageMaker's health check: 200 with an empty body once the model is loaded."""
        return Response(b"", status=200)

    @app.post("/invocations")
    def invocations() -> Response:
        """Transcode a batch of records."""
        current = knobs.current
        if current.latency_ms:
            time.sleep(current.latency_ms / 1000.0)
        if current.throttle_rate or current.error_rate:
            # One draw for both, so each rate is the exact fraction of requests it claims.
            draw = chance.random()
            if draw < current.throttle_rate:
                return _error(429, "throttled")
            if draw < current.throttle_rate + current.error_rate:
                return _error(500, "internal")

        content_type = request.mimetype
        parse = PARSERS.get(content_type)
        if parse is None:
            return _error(
                415,
                "unsupported_media_type",
                f"Content-Type must be one of {', '.join(CONTENT_TYPES)}",
            )
        accept = _chosen_accept(content_type)
        if accept is None:
            return _error(
                406, "not_acceptable", f"Accept must be one of {', '.join(CONTENT_TYPES)}"
            )
        try:
            records = parse(request.get_data(cache=False))
        except BadBody as exc:
            return _error(exc.status, exc.code, exc.message)
        domain = domain_from_custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES_HEADER))
        results = transcoder.transcode(records, domain)
        # The bare media type (Flask would add "; charset=utf-8" to text/csv): callers compare
        # it with the three names of the contract. The body is UTF-8 whatever the type.
        response = Response(RENDERERS[accept](results), status=200, content_type=accept)
        # Tell the caller which domain's ids these are; SageMaker passes this header back.
        response.headers[CUSTOM_ATTRIBUTES_HEADER] = f"domain={domain}"
        return response

    @app.get("/_stand-in/knobs")
    def get_knobs() -> Response:
        """The knobs in force."""
        return Response(json.dumps(asdict(knobs.current)), mimetype=JSON)

    @app.put("/_stand-in/knobs")
    def put_knobs() -> Response:
        """Change some knobs (tests and demos); answers the knobs now in force."""
        changes = request.get_json(force=True, silent=True)
        if not isinstance(changes, dict):
            return _error(400, "invalid_request", "expected a JSON object of knobs")
        try:
            updated = knobs.update(changes)
        except (TypeError, ValueError) as exc:
            return _error(400, "invalid_request", str(exc))
        return Response(json.dumps(asdict(updated)), mimetype=JSON)

    return app


# --- Command line ------------------------------------------------------------------------------


def _master_key(text: str) -> bytes:
    """argparse type: a non-empty hex string."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("the master key must be hex") from None
    if not key:
        raise argparse.ArgumentTypeError("the master key must not be empty")
    return key


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments; defaults come from the environment, then the contract's values."""
    env = os.environ
    parser = argparse.ArgumentParser(
        description="Local stand-in for the seller's model container (identity transcoder)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--master-key-hex",
        type=_master_key,
        default=_master_key(env.get(ENV_MASTER_KEY_HEX) or DEMO_MASTER_KEY_HEX),
        help=f"HMAC master key in hex (env {ENV_MASTER_KEY_HEX}); default: the published "
        "demo key, which protects nothing",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=float(env.get(ENV_LATENCY_MS, "0")),
        help=f"delay added to every invocation (env {ENV_LATENCY_MS})",
    )  # fmt: skip
    parser.add_argument(
        "--error-rate", type=float, default=float(env.get(ENV_ERROR_RATE, "0")),
        help=f"fraction of invocations answered 500 (env {ENV_ERROR_RATE})",
    )  # fmt: skip
    parser.add_argument(
        "--throttle-rate", type=float, default=float(env.get(ENV_THROTTLE_RATE, "0")),
        help=f"fraction of invocations answered 429 (env {ENV_THROTTLE_RATE})",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the container (threaded werkzeug) until interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        app = create_app(
            master_key=args.master_key_hex,
            latency_ms=args.latency_ms,
            error_rate=args.error_rate,
            throttle_rate=args.throttle_rate,
        )
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # One process on purpose: the knobs live in memory, and PUT /_stand-in/knobs must reach the
    # process that answers the next invocation.
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=PathOnlyRequestHandler
    )
    if args.master_key_hex == DEMO_MASTER_KEY:
        log.info("using the published demo master key: ids are not secret")
    log.info("model container stand-in on http://%s:%s", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
