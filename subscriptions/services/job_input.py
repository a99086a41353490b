"""Reading a job's input as it streams past: validation, record counting and chunk boundaries.

:class:`InputScanner` wraps the upload (or the S3 object given by ``input_uri``) while it is copied
to the job's input key: every byte is seen once, nothing is held but the current line. It checks
the encoding (UTF-8), the line length, the total size and, for CSV, the header row and delimiter,
and splits the records into chunks of at most ``records_per_chunk`` records and ``max_chunk_bytes``
bytes, each known by its byte range in the input object, so a worker can read one chunk back with
a ranged GET. :func:`chunk_records` is the reading side: a chunk's bytes back into records.

A CSV record may span lines (a quoted field with a line break); where a quoted field starts and
ends follows the csv module's rules (:func:`csv_line_state`), so the portal and a model that parses
the payload with them agree on every record. Blank lines (nothing but ASCII spaces, tabs and line
breaks) are not records.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from json.scanner import make_scanner
from typing import Any, BinaryIO

from portal.errors import ServiceError

CSV = "text/csv"
JSONLINES = "application/jsonlines"
JOB_CONTENT_TYPES = (CSV, JSONLINES)
_BOM = codecs.BOM_UTF8
_OTHER_DELIMITERS = (";", "\t", "|")
# A line with nothing but ASCII whitespace (what bytes.strip() removes) between two line breaks:
# not a record. Searched from each "\n", which is many times faster than a multi-line "^...$".
_BLANK_LINE = re.compile(rb"\n[ \t\r\x0b\x0c]*\n")


class InputRejected(ServiceError):
    """The job's input cannot be run: empty, not UTF-8, no header, wrong delimiter... (400)."""

    status = 400
    code = "invalid_input"


class InputTooLarge(ServiceError):
    """The job's input is over the size limit (413)."""

    status = 413
    code = "input_too_large"


@dataclass(frozen=True)
class ChunkSpec:
    """Where one chunk's records are in the input object."""

    index: int
    first_line: int
    first_record: int
    byte_offset: int
    byte_length: int
    record_count: int


@dataclass
class _OpenChunk:
    first_line: int
    first_record: int
    byte_offset: int
    byte_length: int = 0
    record_count: int = 0


@dataclass
class InputScanner:
    """A file-like pass-through that validates and splits the input it is read through."""

    source: BinaryIO
    media_type: str
    records_per_chunk: int
    max_chunk_bytes: int
    max_line_bytes: int
    max_total_bytes: int
    chunks: list[ChunkSpec] = field(default_factory=list)
    csv_header: str = ""
    records_total: int = 0
    bytes_total: int = 0
    _pending: bytearray = field(default_factory=bytearray)
    _offset: int = 0  # of the first byte in _pending
    _line: int = 0  # physical lines completed
    _record: bytearray = field(default_factory=bytearray)  # a CSV record still open (quotes)
    _record_offset: int = 0
    _record_line: int = 0
    _in_quotes: bool = False
    _seen_header: bool = False
    _chunk: _OpenChunk | None = None
    _done: bool = False

    def read(self, size: int = -1) -> bytes:
        """Read from the source, scanning what passes; the end of the source closes the scan."""
        data = self.source.read(size)
        # s3transfer takes a short read for the end of the stream: fill ``size`` when possible.
        while data and size and size > 0 and len(data) < size:
            more = self.source.read(size - len(data))
            if not more:
                break
            data += more
        if data:
            self._feed(data)
        elif not self._done:
            self.finish()
        return data

    # --- scanning ---------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self.bytes_total += len(data)
        if self.bytes_total > self.max_total_bytes:
            raise InputTooLarge(
                f"The input is over the {self.max_total_bytes // (1024 * 1024)} MB a job accepts."
            )
        self._pending += data
        start = 0
        while True:
            end = self._pending.find(b"\n", start)
            if end < 0:
                break
            self._line_complete(bytes(self._pending[start : end + 1]), self._offset + start)
            start = end + 1
        del self._pending[:start]
        self._offset += start
        # What is left is one unfinished line: its "\r" of a CRLF may be there already.
        if len(self._pending) > self.max_line_bytes + 1:
            if self.media_type == CSV and b"\r" in self._pending:
                self._bare_cr(self._line + 1)
            self._too_long(self._line + 1)

    def finish(self) -> None:
        """The end of the input: the last line (without a line break), then the checks."""
        if self._done:
            return
        self._done = True
        if self._pending:
            self._line_complete(bytes(self._pending), self._offset)
            self._pending.clear()
        if self._in_quotes:
            raise InputRejected(
                f"The record starting on line {self._record_line} has an unclosed quote.",
                code="unclosed_quote",
            )
        if self.media_type == CSV and not self._seen_header:
            raise InputRejected("The file is empty.", code="empty_input")
        if self.records_total == 0:
            raise InputRejected("The file has no records.", code="empty_input")
        self._close_chunk()

    def _too_long(self, line: int) -> None:
        raise InputRejected(
            f"Line {line} is longer than {self.max_line_bytes} bytes.", code="line_too_long"
        )

    def _bare_cr(self, line: int) -> None:
        raise InputRejected(
            f"Line {line} has a carriage return (CR) that does not end the line: save the file "
            "with LF or CRLF line breaks.",
            code="invalid_line_break",
        )

    def _line_complete(self, raw: bytes, offset: int) -> None:
        self._line += 1
        # The limit is on the line's content: its line break ("\n" or "\r\n") is not counted.
        if len(raw) > self.max_line_bytes and len(_without_eol(raw)) > self.max_line_bytes:
            self._too_long(self._line)
        if offset == 0 and raw.startswith(_BOM):
            raw, offset = raw[len(_BOM) :], len(_BOM)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputRejected(
                f"Line {self._line} is not UTF-8 text; save the file as UTF-8.",
                code="invalid_encoding",
            ) from None
        if self.media_type == CSV:
            self._csv_line(raw, text, offset)
        else:
            self._jsonlines_line(raw, text, offset)

    def _csv_line(self, raw: bytes, text: str, offset: int) -> None:
        if not self._in_quotes:
            if not raw.strip():
                return
            if self._seen_header and b'"' not in raw:
                cr = raw.find(b"\r")
                if cr < 0 or (cr == len(raw) - 2 and raw.endswith(b"\n")):
                    # The usual line: a whole record, no quotes, no CR but a CRLF's (this runs
                    # for every line of a file up to 1 GB).
                    self._add_record(offset, len(raw), self._line)
                    return
            self._record_offset, self._record_line = offset, self._line
        self._record += raw
        self._in_quotes, bare_cr = csv_line_state(raw, in_quotes=self._in_quotes)
        if bare_cr:
            self._bare_cr(self._line)
        if self._in_quotes:
            if len(self._record) > self.max_line_bytes:
                self._too_long(self._record_line)
            return
        record = bytes(self._record)
        self._record.clear()
        if not self._seen_header:
            self._csv_header(record.decode("utf-8"))
            return
        self._add_record(self._record_offset, len(record), self._record_line)

    def _csv_header(self, text: str) -> None:
        line = text.rstrip("\r\n")
        try:
            names = next(csv.reader([line]), [])
        except csv.Error:  # a header the csv module cannot read at all
            names = []
        if len(names) == 1 and any(d in line for d in _OTHER_DELIMITERS):
            raise InputRejected(
                "The header row has no comma: the delimiter must be ','.", code="wrong_delimiter"
            )
        cleaned = [name.strip() for name in names]
        if (
            not cleaned
            or any(not name for name in cleaned)
            or any(_looks_like_data(n) for n in cleaned)
        ):
            raise InputRejected(
                "The first row must be a header naming every column.", code="no_header"
            )
        if len(set(cleaned)) != len(cleaned):
            raise InputRejected("The header row names a column twice.", code="no_header")
        self.csv_header = line + "\n"
        self._seen_header = True

    def _jsonlines_line(self, raw: bytes, text: str, offset: int) -> None:
        if not raw.strip():
            return
        if self.records_total == 0:
            # The first record tells a JSON Lines file from something else; later bad lines are
            # the model's to reject, record by record.
            try:
                first = json.loads(text)
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
                first = None
            if not isinstance(first, dict):
                raise InputRejected(
                    f"Line {self._line} is not a JSON object: the file is not JSON Lines.",
                    code="invalid_jsonlines",
                )
        self._add_record(offset, len(raw), self._line)

    def _add_record(self, offset: int, length: int, line: int) -> None:
        header_bytes = len(self.csv_header.encode("utf-8"))
        chunk = self._chunk
        if chunk is not None and (
            chunk.record_count >= self.records_per_chunk
            or header_bytes + (offset + length - chunk.byte_offset) > self.max_chunk_bytes
        ):
            self._close_chunk()
            chunk = None
        if chunk is None:
            chunk = self._chunk = _OpenChunk(
                first_line=line, first_record=self.records_total, byte_offset=offset
            )
        chunk.byte_length = offset + length - chunk.byte_offset
        chunk.record_count += 1
        self.records_total += 1

    def _close_chunk(self) -> None:
        chunk = self._chunk
        if chunk is None:
            return
        self.chunks.append(
            ChunkSpec(
                index=len(self.chunks),
                first_line=chunk.first_line,
                first_record=chunk.first_record,
                byte_offset=chunk.byte_offset,
                byte_length=chunk.byte_length,
                record_count=chunk.record_count,
            )
        )
        self._chunk = None


def _looks_like_data(name: str) -> bool:
    """A header cell that is a number or an email address is a record, not a column name."""
    if "@" in name:
        return True
    try:
        float(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ChunkRecords:
    """A chunk's payload for the model and the input line of each of its records."""

    payload: bytes
    lines: list[int]


def chunk_records(
    *, data: bytes, media_type: str, csv_header: str, first_line: int
) -> ChunkRecords:
    """A chunk's bytes (as the scanner delimited them) back into a payload and line numbers."""
    prefix = csv_header.encode("utf-8") if media_type == CSV else b""
    body = data[:-1] if data.endswith(b"\n") else data
    if (
        (media_type != CSV or b'"' not in data)
        and body
        and not _BLANK_LINE.search(b"\n" + body + b"\n")
    ):
        # No quotes and no blank lines (the usual chunk): one record per line, as below, found
        # with a few scans of the whole chunk instead of a Python step per line.
        count = body.count(b"\n") + 1
        return ChunkRecords(
            payload=prefix + body + b"\n", lines=list(range(first_line, first_line + count))
        )
    records: list[bytes] = []
    lines: list[int] = []
    line = first_line
    open_record: list[bytes] = []
    open_line = line
    in_quotes = False
    for raw in _split_lines(data):
        if media_type == CSV:
            if not in_quotes:
                if not raw.strip():
                    line += 1
                    continue
                open_line = line
            open_record.append(raw)
            in_quotes, _bare_cr = csv_line_state(raw, in_quotes=in_quotes)  # none: scanned
            if not in_quotes:
                records.append(_with_newline(b"".join(open_record)))
                lines.append(open_line)
                open_record = []
        elif raw.strip():
            records.append(_with_newline(raw))
            lines.append(line)
        line += 1
    return ChunkRecords(payload=prefix + b"".join(records), lines=lines)


def payload_records(payload: bytes, *, media_type: str, csv_header: str) -> list[bytes]:
    """The records of a payload :func:`chunk_records` made, each with its line break (no header).

    For sending a chunk's records in smaller groups: the payload has no blank line, and each
    record ends with its line break.
    """
    if media_type == CSV:
        payload = payload[len(csv_header.encode("utf-8")) :]
    lines = _split_lines(payload)
    if media_type != CSV:
        return lines
    records: list[bytes] = []
    open_record: list[bytes] = []
    in_quotes = False
    for raw in lines:
        open_record.append(raw)
        in_quotes, _bare_cr = csv_line_state(raw, in_quotes=in_quotes)
        if not in_quotes:
            records.append(b"".join(open_record))
            open_record = []
    if open_record:
        records.append(b"".join(open_record))
    return records


def _without_eol(line: bytes) -> bytes:
    """The line without its "\n" or "\r\n"."""
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


# A physical CSV line whose every field is either unquoted (no quote, comma or CR in it) or quoted
# in full ("..." with "" for a quote): the usual line, read in C; any other takes the Python way.
_PLAIN_CSV_LINE = re.compile(rb'(?:"(?:[^"]|"")*"|[^",\r\n]*)(?:,(?:"(?:[^"]|"")*"|[^",\r\n]*))*')
_COMMA, _QUOTE, _CR = ord(","), ord('"'), ord("\r")


def csv_line_state(line: bytes, *, in_quotes: bool) -> tuple[bool, bool]:
    """Whether a CSV record is still inside a quoted field after this physical line, and whether
    the line holds a carriage return outside quotes that does not end it.

    The csv module's rules (Python's reader, and so the transcoder; Excel's too): a quote opens a
    quoted field only as the field's first character, ``""`` inside one is a quote, and a quote
    anywhere else (``O"Brien``, ``5" tall``) is just a character. A bare CR outside quotes ends a
    row for the csv module but not a line here, so the two would count records differently.
    Bytes are fine: no byte of a multi-byte UTF-8 character is a quote, comma or CR.
    """
    body = _without_eol(line)
    if not in_quotes and (
        (b'"' not in body and b"\r" not in body) or _PLAIN_CSV_LINE.fullmatch(body)
    ):
        return False, False
    position, end = 0, len(body)
    state = "quoted" if in_quotes else "start"
    while position < end:
        if state == "quoted":
            quote = body.find(b'"', position)
            if quote < 0:
                return True, False  # the rest of the line is inside the quotes
            if quote + 1 < end and body[quote + 1] == _QUOTE:
                position = quote + 2  # "" is a quote inside the field
                continue
            position, state = quote + 1, "closed"
        elif state == "closed":  # just after a closing quote
            if body[position] == _COMMA:
                position, state = position + 1, "start"
            else:
                state = "unquoted"  # the csv module keeps what follows, as text
        elif state == "start" and body[position] == _QUOTE:
            position, state = position + 1, "quoted"
        else:  # an unquoted field: up to the next comma, quotes included
            comma = body.find(b",", position)
            stop = end if comma < 0 else comma
            if body.find(b"\r", position, stop) >= 0:
                return False, True
            position, state = stop + 1, "start"
    return state == "quoted", False


def _split_lines(data: bytes) -> list[bytes]:
    """Lines ending at ``\\n`` only, as the scanner counts them (a lone ``\\r`` is data)."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _with_newline(record: bytes) -> bytes:
    return record if record.endswith(b"\n") else record + b"\n"


# JSON's own whitespace: a line is one JSON value between any of these and nothing else.
_JSON_WHITESPACE = " \t\r\n"
# The scanner json.loads parses with (the default decoder's), called without its wrapping.
_scan = make_scanner(json.JSONDecoder())


def answer_lines(answer: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """The model's JSON Lines answer as (line text, object) pairs; a line that is not an object
    (blank, not JSON, another JSON value) is skipped.

    Each line is what ``json.loads`` makes of it, but read as one UTF-8 text and parsed by the
    scanner ``json.loads`` itself uses: ``json.loads`` per line costs more in its wrapping than in
    parsing a short line, and this runs for every record of a job. An answer with what
    ``json.loads`` treats specially (not UTF-8, a byte-order mark, NUL, a bare ``\r`` that ends a
    line for ``splitlines``) takes the plain line-by-line way, with no text (callers re-encode).
    """
    try:
        text = answer.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text or "\r" in text or "\ufeff" in text or "\x00" in text:
        yield from _answer_lines_each(answer)
        return
    scan, whitespace = _scan, _JSON_WHITESPACE  # locals: this loop runs for every record
    for line in text.split("\n"):
        stripped = line.strip(whitespace)
        if not stripped:
            continue
        try:
            value, end = scan(stripped, 0)
        except (StopIteration, ValueError):  # what json.loads reports as "not JSON"
            continue
        if end == len(stripped) and type(value) is dict:
            yield stripped, value


def _answer_lines_each(answer: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """:func:`answer_lines` with ``json.loads`` on each line (no text: callers re-encode)."""
    for line in answer.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield "", value


def part_lines(answer: bytes) -> list[dict[str, Any]]:
    """The model's JSON Lines answer as objects (a line that is not an object is skipped)."""
    return [value for _text, value in answer_lines(answer)]
