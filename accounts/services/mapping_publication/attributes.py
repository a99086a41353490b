"""DynamoDB attribute values: mapping items marshalled to and from the low-level form.

boto3's serializer lives in boto3, which the portal may not import outside the AWS gateway,
so the few types the mapping tables hold are converted here.
"""

from __future__ import annotations

from typing import Any


def _marshal_value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list | tuple):
        return {"L": [_marshal_value(element) for element in value]}
    raise TypeError(f"Mapping items hold strings and lists of strings, not {type(value).__name__}")


def marshal_item(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A plain item (strings, lists of strings) in DynamoDB's low-level attribute-value form."""
    return {name: _marshal_value(value) for name, value in item.items()}


def _unmarshal_value(value: dict[str, Any]) -> Any:
    (kind, data), *_ = value.items()
    if kind in ("S", "N", "B", "BOOL"):
        return data  # numbers stay strings: "ACCOUNT_ID" may have been written as N
    if kind == "NULL":
        return None
    if kind == "L":
        return [_unmarshal_value(element) for element in data]
    if kind == "M":
        return {name: _unmarshal_value(element) for name, element in data.items()}
    if kind in ("SS", "NS", "BS"):
        return sorted(data)
    raise ValueError(f"Unknown DynamoDB attribute type {kind!r}")


def unmarshal_item(item: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A low-level DynamoDB item as plain Python values (numbers kept as their string form)."""
    return {name: _unmarshal_value(value) for name, value in item.items()}
