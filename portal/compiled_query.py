"""A queryset compiled to SQL once per thread and then run many times with other values.

Turning a queryset with several ``select_related`` joins and a subquery into SQL costs the ORM
milliseconds of CPU on every call, several times what the database needs to answer it. For the
one query on the busiest path (the subscription an invocation is for, with the caller's role) the
portal compiles it once, with sentinel values standing for the parameters, and afterwards only
swaps the real values in and builds the model instances the way ``QuerySet`` does (Django's own
converters and related populators), so the result is indistinguishable from the ORM's.

The query's shape must not depend on the values: ``build`` receives sentinels and may use them
only as parameters (a test compares the results with the plain ORM for each query built here).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators

# Values no real parameter takes; each stands for one named parameter while compiling.
_SENTINEL_BASE = -7_319_000_000


@dataclass
class _Compiled:
    sql: str
    # (name, None) for a parameter given at run time, (None, value) for a constant of the query.
    params: list[tuple[str | None, Any]]
    compiler: Any
    # Django's converters for the columns, found once (results_iter would look them up each time).
    converters: dict[int, Any]
    init_list: list[str]
    model_slice: slice
    populators: list[Any]
    annotations: dict[str, int]
    db: str


class CompiledQuery:
    """``build(**parameters)`` → a queryset; :meth:`first` runs it with real values."""

    def __init__(self, build: Callable[..., QuerySet], *parameters: str) -> None:
        self._build = build
        self._parameters = parameters
        # Per thread: a compiler belongs to the thread's own database connection.
        self._local = threading.local()

    def _compiled(self) -> _Compiled:
        compiled = getattr(self._local, "compiled", None)
        if compiled is None:
            compiled = self._local.compiled = self._compile()
        return compiled

    def _compile(self) -> _Compiled:
        sentinels = {name: _SENTINEL_BASE - n for n, name in enumerate(self._parameters)}
        names = {value: name for name, value in sentinels.items()}
        queryset = self._build(**sentinels)
        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, raw_params = compiler.as_sql()
        params = [(names[p], None) if p in names else (None, p) for p in raw_params]
        missing = set(self._parameters) - {name for name, _ in params if name}
        if missing:
            raise ValueError(f"The query does not use the parameters {sorted(missing)}.")
        klass_info, select = compiler.klass_info, compiler.select
        columns = [column[0] for column in select[0 : compiler.col_count]]
        if compiler.has_composite_fields(columns):
            raise ValueError("Composite fields are not supported by CompiledQuery.")
        fields = klass_info["select_fields"]
        model_slice = slice(fields[0], fields[-1] + 1)
        return _Compiled(
            sql=sql,
            params=params,
            compiler=compiler,
            converters=compiler.get_converters(columns),
            init_list=[column[0].target.attname for column in select[model_slice]],
            model_slice=model_slice,
            populators=get_related_populators(klass_info, select, queryset.db),
            annotations=dict(compiler.annotation_col_map),
            db=queryset.db,
        )

    def first(self, **values: Any) -> Model | None:
        """The first row as a model instance (related objects and annotations set), or None."""
        compiled = self._compiled()
        params = [values[name] if name else constant for name, constant in compiled.params]
        with connections[compiled.db].cursor() as cursor:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        # Django's converters for each column (dates on SQLite, JSON, booleans...), as
        # results_iter applies them.
        if compiled.converters:
            (row,) = compiled.compiler.apply_converters([row], compiled.converters)
        model = compiled.compiler.klass_info["model"]
        instance = model.from_db(compiled.db, compiled.init_list, row[compiled.model_slice])
        for populator in compiled.populators:
            populator.populate(row, instance)
        for name, position in compiled.annotations.items():
            setattr(instance, name, row[position])
        return instance
