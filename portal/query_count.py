"""Counting the SQL queries a piece of code makes (tests and benchmarks).

Django's CaptureQueriesContext reads ``connection.queries_log``, which every request clears
(the request_started signal resets it), so around a test-client request it counts nothing.
An execute wrapper sees every query, whatever happens to the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


class QueryCounter:
    """The number of queries executed while it was active."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@contextmanager
def count_queries() -> Iterator[QueryCounter]:
    """``with count_queries() as counted: ...; counted.count``."""
    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        yield counter
