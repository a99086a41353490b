"""``make demo``: run the whole local stack under one supervisor (honcho) until Ctrl-C.

Processes: the bundled redis-server, the moto server, the local Cognito (pool bootstrap plus
hosted-UI stand-in), the seller side (model container, SageMaker runtime stand-in, seller token
service), the SageMaker Studio stand-in (in front of moto's SageMaker API), the portal under
gunicorn, a Celery worker and Celery beat. The portal, worker and beat start once the local
Cognito has written this run's settings.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

from honcho.manager import Manager

from devstack import config
from devstack.embedded_redis import port_open, redis_command

# gunicorn's access log without query strings: OIDC callbacks carry codes there.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


def processes(run_id: str) -> dict[str, list[str]]:
    """The command line of every process of the stack."""
    python = sys.executable
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    after = [python, "-m", "devstack.after_bootstrap", run_id]
    return {
        "redis": redis_command(config.PORTS["redis"], config.VAR / "redis"),
        "moto": [python, "-m", "moto.server", "-H", config.HOST, "-p", str(config.PORTS["moto"])],
        "cognito": [python, "-m", "devstack.cognito_stack", run_id],
        "model": [
            python, "-m", "devstack.model_container",
            "--host", config.HOST, "--port", str(config.PORTS["model"]),
        ],
        "runtime": [
            python, "-m", "devstack.sagemaker_runtime",
            "--host", config.HOST, "--port", str(config.PORTS["runtime"]),
            *[
                arg
                for _, endpoint in config.DEMO_ENDPOINTS.values()
                for arg in ("--endpoint", f"{endpoint}={config.url('model')}")
            ],
        ],
        "studio": [
            python, "-m", "devstack.sagemaker_studio",
            "--host", config.HOST, "--port", str(config.PORTS["studio"]),
            "--moto-url", config.url("moto"),
            *[
                arg
                for account_id, domain, profiles in config.DEMO_STUDIO_DOMAINS.values()
                for arg in ("--domain", f"{account_id}:{domain}={','.join(profiles)}")
            ],
        ],
        "seller": [
            python, "-m", "devstack.seller_token_service",
            "--host", config.HOST, "--port", str(config.PORTS["seller"]),
            # lob-a's account is entitled; lob-b's entitlement ended yesterday.
            "--entitle", f"{config.PRODUCT_CODE}:{config.DEMO_ENDPOINTS['lob-a'][0]}",
            "--entitle", f"{config.PRODUCT_CODE}:{config.DEMO_ENDPOINTS['lob-b'][0]}:{yesterday}",
        ],
        "web": [
            *after, "--setup", "--",
            python, "-m", "gunicorn", "portal.wsgi",
            "--bind", f"{config.HOST}:{config.PORTS['web']}",
            "--workers", "2", "--threads", "4", "--timeout", "90",
            "--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT,
        ],
        "worker": [
            *after, "--",
            python, "-m", "celery", "-A", "portal", "worker",
            "--concurrency", "2", "--hostname", "worker@%h",
        ],
        "beat": [
            *after, "--",
            # Its schedule file: CELERY_BEAT_SCHEDULE_FILENAME (var/ locally).
            python, "-m", "celery", "-A", "portal", "beat",
        ],
    }  # fmt: skip


def busy_ports() -> list[str]:
    """Services whose port is already taken (another stack, or something else)."""
    return [
        f"{name} ({port})" for name, port in config.PORTS.items() if port_open(config.HOST, port)
    ]


def main() -> int:
    """Prepare the database, then start and supervise every process."""
    busy = busy_ports()
    if busy:
        print(f"Cannot start: ports in use by another process: {', '.join(busy)}.", file=sys.stderr)
        print("Is `make demo` already running? Stop it with Ctrl-C first.", file=sys.stderr)
        return 1
    (config.VAR / "redis").mkdir(parents=True, exist_ok=True)
    for stale in (config.STATE_FILE, config.ENV_FILE):
        stale.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"], cwd=config.ROOT, check=True
    )

    print("Gatehouse local stack:")
    print(f"  portal            {config.url('web')}")
    print("                    sign in as admin, user-lob-a, user-lob-b or lob-a-admin")
    print(f"  Cognito hosted UI {config.url('cognito')}")
    print(f"  moto (AWS APIs)   {config.url('moto')}")
    print(f"  SageMaker runtime {config.url('runtime')}   (stand-in, forwards to the model)")
    print(f"  SageMaker Studio  {config.url('studio')}   (stand-in: Studio URLs, else moto)")
    print(f"  model container   {config.url('model')}   (identity transcoder)")
    print(f"  seller tokens     {config.url('seller')}   (the seller's token service)")
    print(f"  redis             redis://{config.HOST}:{config.PORTS['redis']}/0")
    print(f"  details for scripts (ids, demo passwords): {config.STATE_FILE}")
    print("Ctrl-C stops everything.\n", flush=True)

    manager = Manager()
    for name, command in processes(uuid.uuid4().hex).items():
        manager.add_process(name, subprocess.list2cmdline(command), cwd=str(config.ROOT))
    manager.loop()
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
