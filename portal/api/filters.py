"""Query-parameter filters shared by the API's list endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django_filters.fields import IsoDateTimeField as _IsoDateTimeField

from portal.keys import key_from_text


def in_utc_range(value: datetime) -> bool:
    """Whether an aware time can be expressed in UTC (9999-12-31T23:59-14:00 cannot)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        return False
    return True


class IsoDateTimeField(_IsoDateTimeField):
    """An ISO 8601 time that the database can compare: one beyond year 9999 in UTC is invalid
    (SQLite's adapter converts it to UTC and raised OverflowError: a 500)."""

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is not None and not in_utc_range(parsed):
            raise ValidationError("The time is out of range.", code="invalid")
        return parsed


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO 8601 filter, refusing times outside what the database can hold."""

    field_class = IsoDateTimeField


class VisibleIdFilter(django_filters.CharFilter):
    """A filter on an integer foreign key that finds nothing for an id that is not a number or
    not in range, instead of validating it against every row: "no such id" (400) against "not
    yours" (no rows) would tell a caller which ids exist in other LOBs."""

    def filter(self, queryset: QuerySet, value: str) -> QuerySet:
        if not value:
            return queryset
        key = key_from_text(value)
        return queryset.none() if key is None else queryset.filter(**{self.field_name: key})
