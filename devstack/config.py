"""Where the local stack listens, and the files through which its processes find each other."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
STATE_FILE = VAR / "devstack.json"
ENV_FILE = VAR / "devstack.env"

HOST = "127.0.0.1"
REGION = "us-east-1"
PORTS = {
    "web": int(os.environ.get("GATEHOUSE_WEB_PORT", "8000")),
    "redis": int(os.environ.get("GATEHOUSE_REDIS_PORT", "6479")),
    "moto": int(os.environ.get("GATEHOUSE_MOTO_PORT", "4566")),
    "cognito": int(os.environ.get("GATEHOUSE_COGNITO_PORT", "8110")),
    "model": int(os.environ.get("GATEHOUSE_MODEL_PORT", "8120")),
    "seller": int(os.environ.get("GATEHOUSE_SELLER_PORT", "8130")),
    "runtime": int(os.environ.get("GATEHOUSE_RUNTIME_PORT", "8140")),
    "studio": int(os.environ.get("GATEHOUSE_STUDIO_PORT", "8150")),
}

# The demo's Marketplace product, and the SageMaker endpoint serving it in each LOB's account.
PRODUCT_CODE = "identity-transcoder"
DEMO_ENDPOINTS = {
    "lob-a": ("111111111111", "identity-transcoder-lob-a"),
    "lob-b": ("222222222222", "identity-transcoder-lob-b"),
}


# Each demo LOB's SageMaker Studio domain (created in moto, in its account, by the Studio stand-in)
# and the user profiles in it: (account id, domain name, profile names).
DEMO_STUDIO_DOMAINS = {
    "lob-a": ("111111111111", "studio-lob-a", ("user-lob-a", "lob-a-admin")),
    "lob-b": ("222222222222", "studio-lob-b", ("user-lob-b",)),
}


def url(service: str) -> str:
    """http://127.0.0.1:<port> of a service of the local stack."""
    return f"http://{HOST}:{PORTS[service]}"


def write_private(path: Path, text: str) -> None:
    """Write atomically, readable only by the owner (the files hold demo secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(text)
    partial.chmod(0o600)
    partial.replace(path)


def read_state() -> dict:
    """The running stack's description, as written by the Cognito process at start."""
    return json.loads(STATE_FILE.read_text())


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines of the env file the stack writes for its processes."""
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values
