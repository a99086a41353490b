"""Start a command once the local Cognito has published this run's settings.

``python -m devstack.after_bootstrap RUN_ID [--setup] -- CMD ...`` waits for ``var/devstack.json``
of this run, loads ``var/devstack.env`` into the environment, optionally loads demo data, and
replaces itself with CMD (so signals from the supervisor reach CMD directly).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from devstack import config


def wait_for_run(run_id: str, timeout: float = 120.0) -> None:
    """Block until the state file names this run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(config.STATE_FILE.read_text()).get("run_id") == run_id:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"the local Cognito did not come up within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> None:
    """Wait, load the env, optionally set up demo data, exec the command."""
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: python -m devstack.after_bootstrap RUN_ID [--setup] -- CMD ...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_id")
    parser.add_argument("--setup", action="store_true", help="load demo data first")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("no command given")

    wait_for_run(args.run_id)
    os.environ.update(config.read_env_file())
    if args.setup:
        subprocess.run(
            [sys.executable, "manage.py", "demo_data", "--stack", str(config.STATE_FILE)],
            cwd=config.ROOT,
            check=True,
        )
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
