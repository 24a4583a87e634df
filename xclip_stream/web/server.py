"""The driver's HTTP server: ``/healthz``, ``/readyz``, ``/metrics`` and the live page (``/``).

It runs uvicorn (FastAPI and uvicorn come with Ray Serve) in a thread of the driver, not behind
Serve's HTTP proxy: a kubelet probes the pod it restarts, which is the driver's, and on Kubernetes
the driver joins the cluster over Ray Client, so it is not a Ray node a proxy could route to. The
socket is bound before the thread starts, so a taken port is a clear error at start (exit 2), and
``port: 0`` learns its port. The driver's loop ``publish``es a ``Status``; requests only read it
and the ``LiveState``, never Ray, so a page open in many browsers costs the pipeline nothing but
the thumbnails, which the driver asks the cameras for only while a page is connected (``viewers``).

The page is static files with a strict Content-Security-Policy (no inline script, nothing from
elsewhere: it works without a network), fed by server-sent events (``/api/stream``). Its label form
signs a ``set_labels`` control message in the browser (WebCrypto HMAC with the control secret,
which never travels) and posts the envelope; ``forward`` checks it and writes it to the control
topic, where it is applied like any other. Without a control topic the page is read-only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources

from ..schemas.config import ConfigError, HttpConfig
from .live import LiveState
from .status import Status

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
STREAM_TICK_S = 0.5  # how often a connected page is sent what changed
KEEPALIVE_S = 15.0  # a comment line when nothing changed, so proxies keep the stream open
MAX_CONTROL_BYTES = 65536  # a larger request body is refused unread
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


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
            with bind(host, port) as sock:
                return sock.getsockname()[1]
        except ConfigError:
            continue
    raise ConfigError(f"http: no free port on {host}")


class HttpServer:
    def __init__(self, config: HttpConfig, live: LiveState | None = None):
        self.config = config
        self.status = Status.starting("the pipeline's start")
        self.live = live or LiveState()
        self.forward: Callable[[bytes], str] | None = None  # set when there is a control topic
        self.viewers = 0  # pages connected to /api/stream now
        self.port: int | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._encoded: tuple[tuple, str] | None = None  # (state key, its event): encoded once for every page

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
        config = uvicorn.Config(self.app(), log_level="warning", access_log=False, lifespan="off", loop="asyncio",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            self.stop()
            raise ConfigError(f"http: the server on {self.url} did not start")
        log.info("HTTP server on %s (the live page; /healthz, /readyz, /metrics)", self.url)
        return self

    def stop(self) -> None:
        self._closing = True  # open event streams end
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

        self._page_routes(app)
        return app

    def page_state(self) -> dict:
        return {"status": self.status.readiness(), **self.live.snapshot()}

    def _page_routes(self, app) -> None:
        from fastapi.responses import JSONResponse, Response, StreamingResponse

        files = resources.files(__package__) / "static"

        @app.get("/")
        def index():
            return Response((files / "index.html").read_bytes(), media_type=STATIC["index.html"], headers=PAGE_HEADERS)

        @app.get("/static/{name}")
        def static(name: str):
            if name not in STATIC:  # a fixed set: no path from the request reaches the file system
                return JSONResponse({"error": "not found"}, status_code=404)
            return Response((files / name).read_bytes(), media_type=STATIC[name], headers=PAGE_HEADERS)

        @app.get("/api/state")
        def state():
            return JSONResponse(self.page_state(), headers={"Cache-Control": "no-store"})

        @app.get("/api/cameras/{camera_id}/frame.jpg")
        def frame(camera_id: str):
            jpeg = self.live.thumbnail(camera_id)
            if jpeg is None:
                return JSONResponse({"error": f"no frame of camera {camera_id[:200]!r} yet"}, status_code=404)
            return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

        @app.get("/api/stream")
        async def stream():
            return StreamingResponse(self._events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

        async def control(request):  # a plain Starlette route: the request itself, no parameter parsing
            if self.forward is None:
                return JSONResponse({"error": "no control topic is configured: the page is read-only"},
                                    status_code=409)
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_CONTROL_BYTES:
                    return JSONResponse({"error": f"over {MAX_CONTROL_BYTES} bytes"}, status_code=413)
            try:
                camera = await asyncio.get_running_loop().run_in_executor(None, self.forward, body)
            except ValueError as e:  # AuthError, Refused: the reason, nothing written
                log.warning("live page: control message refused: %s", e)
                return JSONResponse({"error": str(e)[:500]}, status_code=403)
            except Exception as e:  # noqa: BLE001 - the control topic could not be written
                log.error("live page: control message not forwarded: %s: %s", type(e).__name__, e)
                return JSONResponse({"error": f"not forwarded ({type(e).__name__}); try again"}, status_code=503)
            return JSONResponse({"submitted": True, "camera": camera}, status_code=202)

        app.router.add_route("/api/control", control, methods=["POST"])

    def _event(self, key: tuple) -> str:
        """The state's server-sent event, encoded once per change however many pages are open."""
        if self._encoded is None or self._encoded[0] != key:
            self._encoded = (key, f"data: {json.dumps(self.page_state(), separators=(',', ':'))}\n\n")
        return self._encoded[1]

    async def _events(self):
        """Server-sent events: the page's state whenever it changed, checked every STREAM_TICK_S."""
        self.viewers += 1
        sent, quiet = None, 0.0
        try:
            while not self._closing:
                current = (self.live.version, self.status.updated)
                if current != sent:
                    sent, quiet = current, 0.0
                    yield self._event(current)
                elif quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    yield ": keepalive\n\n"
                await asyncio.sleep(STREAM_TICK_S)
                quiet += STREAM_TICK_S
        finally:
            self.viewers -= 1
