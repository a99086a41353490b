"""Health endpoints for the load balancer and orchestrator.

``/healthz`` says the process answers. ``/readyz`` says it can do its work: the database and Redis
answer; otherwise 503 naming what is down. Neither needs authentication nor reveals configuration.

Both are answered by ``HealthCheckMiddleware`` before anything checks the Host header: a load
balancer or orchestrator probes each target by its own address (an ALB sends the target's IP as
Host), which is not in ALLOWED_HOSTS, so Django would answer it 400 and no target would ever turn
healthy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError as exc:
        logger.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return False


def _redis_ok() -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError as exc:
        logger.warning("readiness: redis unreachable (%s)", type(exc).__name__)
        return False
    finally:
        client.close()


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """The database and Redis answer; 503 with the names of what does not."""
    checks = {"database": _database_ok(), "redis": _redis_ok()}
    down = [name for name, ok in checks.items() if not ok]
    if down:
        return JsonResponse(
            {"status": "unavailable", "code": "dependency_down", "down": down, "checks": checks},
            status=503,
        )
    return JsonResponse({"status": "ok", "checks": checks})


_PROBES = {"/healthz": healthz, "/readyz": readyz}


class HealthCheckMiddleware:
    """Answers /healthz and /readyz whatever the Host header names (see the module docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = _PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return self.get_response(request)
