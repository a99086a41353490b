"""The embedded SQLite default takes several writers at once (web process and Celery workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from django.db.utils import ConnectionHandler

ROOT = Path(__file__).resolve().parents[2]


def sqlite_options(database_url: str) -> dict:
    """settings.DATABASES['default']['OPTIONS'] of the local profile for ``database_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGNITO_", "DJANGO_"))}
    env.update(GATEHOUSE_ENV="local", DATABASE_URL=database_url)
    script = (
        "import json; from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_local_sqlite_database_queues_writers_and_url_options_win(tmp_path: Path) -> None:
    options = sqlite_options(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    assert options["transaction_mode"] == "IMMEDIATE"
    assert options["timeout"] == 30
    assert "journal_mode=WAL" in options["init_command"]
    assert sqlite_options(f"sqlite:///{tmp_path / 'b.sqlite3'}?timeout=5")["timeout"] == 5


def test_two_read_then_write_transactions_at_once_both_commit(
    tmp_path: Path, django_db_blocker
) -> None:
    # Two connections with the portal's options, as two processes would have. The first reads,
    # lets the second begin, then writes; the second reads and writes what it read plus one.
    # With deferred transactions the second would fail with "database is locked" (its snapshot is
    # stale once the first commits); with IMMEDIATE it waits for the first and sees its write.
    options = sqlite_options(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "shared.sqlite3")}
    handler = ConnectionHandler(
        {alias: {**database, "OPTIONS": options} for alias in ("default", "second")}
    )
    with django_db_blocker.unblock():  # connections of our own, to a file of our own
        setup = handler["default"]
        with setup.cursor() as cursor:
            cursor.execute("CREATE TABLE counter (value INTEGER)")
            cursor.execute("INSERT INTO counter VALUES (0)")
        setup.close()
        second_begins = threading.Event()
        errors: list[Exception] = []

        def increment(alias: str, *, before_write=None, before_begin=None) -> None:
            connection = handler[alias]
            try:
                if before_begin:
                    before_begin()
                connection.ensure_connection()
                connection._start_transaction_under_autocommit()
                with connection.cursor() as cursor:
                    cursor.execute("SELECT value FROM counter")
                    (value,) = cursor.fetchone()
                    if before_write:
                        before_write()
                    cursor.execute("UPDATE counter SET value = %s", [value + 1])
                connection.commit()
            except Exception as exc:  # reported below: a locked database is what this test is about
                errors.append(exc)
            finally:
                connection.close()

        def let_the_second_begin() -> None:
            second.start()
            second_begins.wait(timeout=10)
            threading.Event().wait(0.2)  # the second is in BEGIN (waiting), or has read

        second = threading.Thread(
            target=increment, args=("second",), kwargs={"before_begin": second_begins.set}
        )
        increment("default", before_write=let_the_second_begin)
        second.join(timeout=60)

        assert errors == []
        check = handler["default"]
        with check.cursor() as cursor:
            cursor.execute("SELECT value FROM counter")
            assert cursor.fetchone() == (2,)
        check.close()
