"""Benchmark: the LOB and membership listing API at scale.

Fills a throwaway database (Django's test database for the configured DATABASE_URL: PostgreSQL
when set, else SQLite) with 1,000 LOBs, 2,000 AWS accounts and 100,000 users each with one
membership, then times ``GET /api/v1/lobs/`` and ``GET /api/v1/memberships/`` in-process for a
platform admin and for a member of a few LOBs. Prints p50, p95 and SQL queries per request, and
the ratio it is judged by: p95 / 50 ms (at most 1.0 passes).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse .venv/bin/python bench/lob_listing.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from portal.query_count import count_queries  # noqa: E402

LOBS, ACCOUNTS, USERS = 1_000, 2_000, 100_000
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
TARGET_P95_MS = 50.0


def fill() -> tuple:
    """Bulk-create the data set; returns (platform admin, a member of three LOBs)."""
    from accounts.models import AwsAccount, Lob, Membership, User

    accounts = AwsAccount.objects.bulk_create(
        AwsAccount(
            account_id=f"{100000000000 + n:012d}",
            name=f"Account {n}",
            invoke_role_arn=f"arn:aws:iam::{100000000000 + n:012d}:role/GatehouseInvokeRole",
            results_bucket=f"gatehouse-results-{n}",
        )
        for n in range(ACCOUNTS)
    )
    lobs = Lob.objects.bulk_create(
        Lob(slug=f"lob-{n:04d}", name=f"LOB {n}", aws_account=accounts[n * 2]) for n in range(LOBS)
    )
    users = User.objects.bulk_create(
        (
            User(username=f"user-{n:06d}", idp_issuer="bench", idp_subject=f"sub-{n}")
            for n in range(USERS)
        ),
        batch_size=5_000,
    )
    roles = [Membership.Role.ANALYST, Membership.Role.VIEWER, Membership.Role.ADMIN]
    Membership.objects.bulk_create(
        (
            Membership(user=user, lob=lobs[n % LOBS], role=roles[n % 3])
            for n, user in enumerate(users)
        ),
        batch_size=5_000,
    )
    member = users[7]
    Membership.objects.bulk_create(
        Membership(user=member, lob=lobs[n], role=Membership.Role.ANALYST) for n in (100, 200)
    )
    admin = User.objects.create(username="bench-admin", is_staff=True, idp_subject="admin")
    if connection.vendor == "postgresql":
        # Planner statistics, as autovacuum keeps them in a live database; without them a bulk
        # load looks empty to the planner and it picks nested loops over 100,000 rows.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return admin, member


def measure(client: APIClient, path: str) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, queries per request) over REQUESTS requests."""
    timings = []
    for _ in range(10):  # warm-up
        client.get(path)
    with count_queries() as counted:
        assert client.get(path).status_code == 200
    for _ in range(REQUESTS):
        start = time.perf_counter()
        response = client.get(path)
        timings.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.95) - 1], counted.count


def main() -> int:
    """Create the test database, fill it, measure, print, clean up."""
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        started = time.perf_counter()
        admin, member = fill()
        print(
            f"database: {connection.vendor}; filled {LOBS} LOBs, {ACCOUNTS} accounts, "
            f"{USERS} users and memberships in {time.perf_counter() - started:.1f}s; "
            f"{REQUESTS} requests per case"
        )
        worst = 0.0
        for who, user in (("platform admin", admin), ("member of 3 LOBs", member)):
            client = APIClient()
            client.force_authenticate(user)
            for path in ("/api/v1/lobs/", "/api/v1/memberships/"):
                p50, p95, queries = measure(client, path)
                worst = max(worst, p95)
                print(
                    f"{path:24} as {who:17}  p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
                    f"{queries} queries/request"
                )
        ratio = worst / TARGET_P95_MS
        print(f"worst p95 {worst:.1f} ms / target {TARGET_P95_MS:.0f} ms = ratio {ratio:.2f}")
        return 0
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
