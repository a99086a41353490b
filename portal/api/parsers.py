"""Request body parsers of the REST API."""

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
            # PostgreSQL cannot compare a string holding NUL: a slug lookup with one was a 500.
            raise ParseError("The document holds a NUL character, which no value may contain.")
        return data


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False
