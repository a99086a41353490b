"""Request body parsers of the REST API: DRF's, each refusing a NUL character in any string.

PostgreSQL cannot store or compare a string holding NUL: a slug lookup with one was a 500. The
NUL-check middleware reads only POSTed forms (the pages'); the API takes PUT and PATCH bodies
too, in JSON, form or multipart encoding, so each parser checks what it parsed.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with JSON nested past Python's recursion limit a 400 like any other
    malformed body (DRF catches only ValueError, so ``[[[...]]]`` 5,000 deep was a 500), and a
    400 for a NUL character in any string."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        if _holds_nul(data):
            raise ParseError(_NUL_MESSAGE)
        return data


class FormParser(parsers.FormParser):
    """DRF's URL-encoded form parser, with a 400 for a NUL character in a field's name or value."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if _form_holds_nul(data):
            raise ParseError(_NUL_MESSAGE)
        return data


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser, with a 400 for a NUL character in a field's name or value (a file's
    content is the file's own business)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parsed = super().parse(stream, media_type, parser_context)
        if _form_holds_nul(parsed.data) or any("\x00" in name for name in parsed.files):
            raise ParseError(_NUL_MESSAGE)
        return parsed


_NUL_MESSAGE = "The request holds a NUL character, which no value may contain."


def _form_holds_nul(data: Any) -> bool:
    return any(_holds_nul(key) or _holds_nul(values) for key, values in data.lists())


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False
