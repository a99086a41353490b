"""The local Cognito (and AWS resources): creates the DynamoDB tables and results buckets, the user
pool, clients, groups and demo users in moto, writes
``var/devstack.json`` and ``var/devstack.env`` for every other process, then serves the hosted-UI
stand-in in front of that pool.

Run by ``make demo`` (through devstack.run) as ``python -m devstack.cognito_stack RUN_ID``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import requests
from werkzeug.serving import make_server

from devstack import config
from devstack.aws_bootstrap import bootstrap_aws
from devstack.cognito_bootstrap import BootstrapResult, bootstrap
from devstack.cognito_hosted_ui import create_app
from devstack.wsgi_thread import PathOnlyRequestHandler

log = logging.getLogger("devstack.cognito")


def wait_for_moto(timeout: float = 60.0) -> None:
    """Block until the moto server answers (it starts alongside this process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(f"{config.url('moto')}/moto-api/", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"moto did not answer at {config.url('moto')} within {timeout:.0f}s")


def portal_env(pool: BootstrapResult) -> dict[str, str]:
    """The environment the portal, worker and beat run with."""
    hosted_ui = config.url("cognito")
    return {
        "GATEHOUSE_ENV": "local",
        "REDIS_URL": f"redis://{config.HOST}:{config.PORTS['redis']}/0",
        "COGNITO_REGION": config.REGION,
        "COGNITO_USER_POOL_ID": pool.pool_id,
        "COGNITO_CLIENT_ID": pool.web_client_id,
        "COGNITO_CLIENT_SECRET": pool.web_client_secret,
        "COGNITO_DOMAIN": hosted_ui,
        "COGNITO_JWKS_URL": f"{hosted_ui}/{pool.pool_id}/.well-known/jwks.json",
        "API_ALLOWED_CLIENT_IDS": f"{pool.web_client_id},{pool.api_client_id}",
        "AWS_ENDPOINT_URL": config.url("moto"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": config.REGION,
    }


def stack_description(run_id: str, pool: BootstrapResult) -> dict:
    """Everything a script needs to find and use the running stack."""
    return {
        "run_id": run_id,
        "portal": config.url("web"),
        "services": {
            "portal": config.url("web"),
            "redis": f"redis://{config.HOST}:{config.PORTS['redis']}/0",
            "moto": config.url("moto"),
            "cognito_hosted_ui": config.url("cognito"),
            "sagemaker_runtime": config.url("runtime"),
            "model_container": config.url("model"),
            "seller_token_service": config.url("seller"),
            "sagemaker_studio": config.url("studio"),
        },
        "cognito": {
            "region": config.REGION,
            "user_pool_id": pool.pool_id,
            "issuer": pool.issuer,
            "jwks_url": f"{config.url('cognito')}/{pool.pool_id}/.well-known/jwks.json",
            "web_client_id": pool.web_client_id,
            "api_client_id": pool.api_client_id,
            "endpoint_url": config.url("moto"),
        },
        "users": [
            {key: user[key] for key in ("username", "password", "email", "name", "groups", "sub")}
            for user in pool.users
        ],
    }


def main(argv: list[str] | None = None) -> None:
    """Bootstrap the pool, publish the stack description, serve the hosted UI."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    wait_for_moto()
    bootstrap_aws(
        config.url("moto"),
        config.REGION,
        {endpoint: account for account, endpoint in config.DEMO_ENDPOINTS.values()},
    )
    web = config.url("web")
    pool = bootstrap(
        moto_url=config.url("moto"),
        region=config.REGION,
        callback_urls=[
            f"{web}/oidc/callback/",
            f"http://localhost:{config.PORTS['web']}/oidc/callback/",
        ],
        logout_urls=[f"{web}/signed-out/", f"http://localhost:{config.PORTS['web']}/signed-out/"],
    )
    app = create_app(moto_url=config.url("moto"), region=config.REGION, pool_id=pool.pool_id)
    server = make_server(
        config.HOST,
        config.PORTS["cognito"],
        app,
        threaded=True,
        request_handler=PathOnlyRequestHandler,
    )
    env = portal_env(pool)
    config.write_private(config.ENV_FILE, "".join(f"{k}={v}\n" for k, v in env.items()))
    config.write_private(
        config.STATE_FILE, json.dumps(stack_description(args.run_id, pool), indent=2) + "\n"
    )
    log.info("user pool %s ready; hosted UI on %s", pool.pool_id, config.url("cognito"))
    log.info(
        "demo users (password for all: see var/devstack.json): %s",
        ", ".join(user["username"] for user in pool.users),
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
