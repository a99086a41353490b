"""Check an API answer against the OpenAPI schema the portal serves, as a client would read it.

:func:`assert_documented` finds the operation of a request in the schema, and checks that the
answer's status is one the operation lists, its content type one listed for that status, every
header listed as required is there, and the body is valid against the listed schema (read
semantics: ``nullable``, ``readOnly`` and ``writeOnly`` as OpenAPI 3.0 means them).
"""

from __future__ import annotations

import re
from typing import Any

from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker


def load_schema(client: Any) -> dict[str, Any]:
    """The schema at /api/schema/, for a client that is signed in."""
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return response.json()


def _operation(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    path = path.split("?", 1)[0]
    # Literal segments first: /audit-events/export/ is not /audit-events/{id}/.
    for template, operations in sorted(schema["paths"].items(), key=lambda p: p[0].count("{")):
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"{method.upper()} {path} is not in the schema")


def assert_documented(schema: dict[str, Any], method: str, path: str, response: Any) -> None:
    """The answer to ``method path`` is one the schema describes."""
    operation = _operation(schema, method, path)
    status = str(response.status_code)
    documented = operation["responses"]
    assert status in documented, (
        f"{method.upper()} {path} answered {status}, the schema lists {sorted(documented)}: "
        f"{response.content[:300]!r}"
    )
    declared = documented[status]
    for name, header in declared.get("headers", {}).items():
        if header.get("required"):
            assert response.has_header(name), f"{status} of {method.upper()} {path}: no {name}"
    content = declared.get("content")
    if not content:
        return
    content_type = response["Content-Type"].split(";")[0].strip()
    media = content.get(content_type) or content.get("*/*")
    assert media is not None, f"{status} of {method.upper()} {path}: {content_type} not listed"
    if content_type != "application/json":
        return
    validator = OAS30ReadValidator(
        {**media["schema"], "components": schema["components"]},
        format_checker=oas30_format_checker,
    )
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(response.json())
    ]
    assert not errors, f"{status} of {method.upper()} {path} breaks its schema: {errors}"
