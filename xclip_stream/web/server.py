"""The driver's HTTP server: ``/healthz``, ``/readyz`` and ``/metrics`` (the live page comes next).

It runs uvicorn (FastAPI and uvicorn come with Ray Serve) in a thread of the driver, not behind
Serve's HTTP proxy: a kubelet probes the pod it restarts, which is the driver's, and on Kubernetes
the driver joins the cluster over Ray Client, so it is not a Ray node a proxy could route to. The
socket is bound before the thread starts, so a taken port is a clear error at start (exit 2), and
``port: 0`` learns its port. The driver's loop ``publish``es a ``Status``; requests only read it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from ..schemas.config import ConfigError, HttpConfig
from .status import Status

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; ConfigError naming the address when it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        raise ConfigError(f"http: cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def available_port(host: str, preferred: int) -> int:
    """``preferred`` when it is free on ``host`` now, else a free port (the demo's, which must print
    its URL before the pipeline starts; a configured port is never replaced: see ``bind``)."""
    for port in (preferred, 0):
        try:
            with socket.socket(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]) as sock:
                sock.bind((host, port))
                return sock.getsockname()[1]
        except OSError:
            continue
    raise ConfigError(f"http: no free port on {host}")


class HttpServer:
    def __init__(self, config: HttpConfig):
        self.config = config
        self.status = Status.starting("the pipeline's start")
        self.port: int | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def publish(self, status: Status) -> None:
        self.status = status  # one reference swap: requests see the old or the new one, whole

    def start(self) -> HttpServer:
        import uvicorn

        sock = bind(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="warning", access_log=False, lifespan="off", loop="asyncio")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            self.stop()
            raise ConfigError(f"http: the server on {self.url} did not start")
        log.info("HTTP server on %s (/healthz, /readyz, /metrics)", self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def app(self):
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse, PlainTextResponse

        app = FastAPI(title="xclip-stream", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/healthz")
        def healthz():
            alive, detail = self.status.alive(time.monotonic(), self.config.stale_after_s)
            return JSONResponse({"alive": alive, "detail": detail}, status_code=200 if alive else 503)

        @app.get("/readyz")
        def readyz():
            status = self.status
            return JSONResponse(status.readiness(), status_code=200 if status.ready else 503)

        @app.get("/metrics")
        def metrics():
            return PlainTextResponse(self.status.metrics_text(), media_type=PROMETHEUS_TEXT)

        return app
