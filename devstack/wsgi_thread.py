"""Serve a WSGI app from a background thread, for tests and the local runner.

The request log names the method and path only: query strings on an OAuth server carry codes,
tokens and states, which must never reach a log.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class PathOnlyRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler with a log line that leaves out the query string."""

    def _path_only(self) -> str:
        """The request path without query string or fragment ("-" before the request is read)."""
        raw_path = getattr(self, "path", "")
        return urlsplit(raw_path).path or "-"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log ``"METHOD /path" status size``."""
        status = getattr(code, "value", code)
        method = getattr(self, "command", None) or "-"
        self.log("info", '"%s %s" %s %s', method, self._path_only(), status, size)

    def log_error(self, format: str, *args: Any) -> None:
        """Log an error without its arguments, which can quote the raw request line."""
        method = getattr(self, "command", None) or "-"
        self.log("error", "error while handling %s %s", method, self._path_only())


class ThreadedServer:
    """A threaded werkzeug server running in a daemon thread; usable as a context manager."""

    def __init__(self, server: BaseWSGIServer, host: str) -> None:
        self._server = server
        self.host = host
        self.port: int = server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"wsgi-{self.port}", daemon=True
        )

    def start(self) -> ThreadedServer:
        """Start serving; returns self so that construction and start can be chained."""
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving, close the listening socket and wait for the thread to end."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> ThreadedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> ThreadedServer:
    """Serve the WSGI ``app`` on ``host:port`` (0 picks a free port) from a daemon thread."""
    server = make_server(host, port, app, threaded=True, request_handler=PathOnlyRequestHandler)
    return ThreadedServer(server, host).start()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, for servers that cannot be handed a socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
