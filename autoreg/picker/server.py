"""The picker's local web server: the page, the images, and JSON endpoints over a :class:`Session`.

Safety on shared machines: it listens on 127.0.0.1 only; every request must carry the session's random token
(``?token=`` or the ``X-Autoreg-Token`` header); a request whose ``Origin`` is not this server's, or whose
``Host`` is not 127.0.0.1/localhost with this port (DNS rebinding), is refused with 403. Nothing is fetched from
the internet: the page, script and style are package data.

:class:`PickApp` maps one request to one response without sockets (tests call it directly);
:class:`PickServer` serves it with the standard library's threading HTTP server.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import InputError

__all__ = ["HOST", "PickApp", "PickServer", "Response", "render_png"]

HOST = "127.0.0.1"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
TOKEN_PLACEHOLDER = "__AUTOREG_TOKEN__"
MAX_BODY = 1 << 20


@dataclass
class Response:
    """One HTTP response."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode("utf-8"))


def render_png(data: Any, *, footprint: Any = None) -> bytes:
    """An 8-bit PNG of an image for display: 0.5–99.5 percentile range, missing data transparent (RGBA).

    Display only: the page never measures on these pixels.
    """
    import cv2
    import numpy as np

    values = np.asarray(data, float)
    valid = np.isfinite(values) if footprint is None else (np.asarray(footprint, bool) & np.isfinite(values))
    if valid.any():
        lo, hi = np.percentile(values[valid], [0.5, 99.5])
    else:
        lo, hi = 0.0, 1.0
    scaled = np.clip((np.where(valid, values, lo) - lo) / max(hi - lo, 1e-30), 0, 1)
    gray = np.round(scaled * 255).astype(np.uint8)
    if valid.all():
        ok, encoded = cv2.imencode(".png", gray)
    else:
        alpha = np.where(valid, 255, 0).astype(np.uint8)
        ok, encoded = cv2.imencode(".png", np.dstack([gray, gray, gray, alpha]))
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


class PickApp:
    """Requests → responses for one session; thread-safe (one lock around the session).

    Parameters
    ----------
    session : Session
    port : int
        The port the page is served on (the allowed ``Origin`` and ``Host``).
    out : path, optional
        Where saving writes the CSV; None lets the caller collect the points (``autoreg.pick`` without ``out``).
    token : str, optional
        Default: 24 random URL-safe characters.
    on_finish : callable, optional
        Called (without arguments) after "save and finish".
    """

    def __init__(self, session: Any, *, port: int, out: str | Path | None = None, token: str | None = None,
                 on_finish: Callable[[], None] | None = None) -> None:
        self.session = session
        self.port = port
        self.out = None if out is None else Path(out)
        self.token = token or secrets.token_urlsafe(18)
        self.on_finish = on_finish
        self.finished = threading.Event()
        self.saved = 0
        self.lock = threading.Lock()
        self._png_cache: dict[str, tuple[int, bytes]] = {}

    @property
    def url(self) -> str:
        """The page's address, token included."""
        return f"http://{HOST}:{self.port}/?token={self.token}"

    # ------------------------------------------------------------------------------------------------ checks

    def _allowed_origins(self) -> set[str]:
        return {f"http://{HOST}:{self.port}", f"http://localhost:{self.port}"}

    def _refusal(self, path: str, headers: dict[str, str]) -> Response | None:
        lower = {k.lower(): v for k, v in headers.items()}
        host = lower.get("host")
        if host is not None and host not in {f"{HOST}:{self.port}", f"localhost:{self.port}"}:
            return _json(HTTPStatus.FORBIDDEN, {"error": "refused: unexpected Host header"})
        origin = lower.get("origin")
        if origin is not None and origin not in self._allowed_origins():
            return _json(HTTPStatus.FORBIDDEN, {"error": "refused: request from another origin"})
        query = parse_qs(urlsplit(path).query)
        given = lower.get("x-autoreg-token") or (query.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return _json(HTTPStatus.FORBIDDEN, {"error": "refused: missing or wrong token; open the URL that "
                                                         "autoreg pick printed"})
        return None

    # ----------------------------------------------------------------------------------------------- routes

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Response:
        """Answer one request."""
        refused = self._refusal(path, headers)
        if refused is not None:
            return refused
        route = urlsplit(path).path
        try:
            if method == "GET" and route in STATIC:
                return self._static(route)
            if method == "GET" and route == "/api/state":
                with self.lock:
                    return _json(HTTPStatus.OK, self.session.state())
            if method == "GET" and route.startswith("/api/image/"):
                return self._image(route.rsplit("/", 1)[1])
            if method == "POST" and route == "/api/action":
                return self._action(self._body(body))
            if method == "POST" and route == "/api/save":
                return self._save(self._body(body))
        except InputError as err:
            return _json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        return _json(HTTPStatus.NOT_FOUND, {"error": f"no such resource: {method} {route}"})

    @staticmethod
    def _body(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"The request is not JSON: {err}.") from err
        if not isinstance(data, dict):
            raise InputError("The request must be a JSON object.")
        return data

    def _static(self, route: str) -> Response:
        name, content_type = STATIC[route]
        text = resources.files("autoreg.picker").joinpath("static", name).read_text(encoding="utf-8")
        if name == "index.html":
            text = text.replace(TOKEN_PLACEHOLDER, self.token)
        return Response(HTTPStatus.OK, text.encode("utf-8"), content_type,
                        {"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'self'; "
                         "img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'"})

    def _image(self, name: str) -> Response:
        with self.lock:
            session = self.session
            if name == "fixed.png":
                key, revision, make = "fixed", 0, lambda: render_png(session.fixed.data)
            elif name == "moving.png":
                key, revision, make = "moving", 0, lambda: render_png(session.moving.data)
            elif name == "warped.png":
                result = session.overlay_result()
                if result is None:
                    return _json(HTTPStatus.NOT_FOUND, {"error": "no transform yet to warp with"})
                key, revision = "warped", session.revision
                make = lambda: render_png(result.warped, footprint=result.footprint)
            else:
                return _json(HTTPStatus.NOT_FOUND, {"error": f"no image {name}"})
            cached = self._png_cache.get(key)
            if cached is None or cached[0] != revision:
                cached = (revision, make())
                self._png_cache[key] = cached
        return Response(HTTPStatus.OK, cached[1], "image/png", {"Cache-Control": "no-store"})

    def _action(self, data: dict[str, Any]) -> Response:
        op = data.get("op")
        s = self.session
        refine = bool(data.get("refine", True))
        with self.lock:
            if op == "add":
                s.add(fixed_xy=data.get("fixed_xy"), moving_xy=data.get("moving_xy"), refine=refine)
            elif op == "move":
                s.move(int(data.get("id", -1)), str(data.get("side")), data.get("xy"), refine=refine)
            elif op == "delete":
                s.delete(int(data.get("id", -1)))
            elif op == "accept":
                s.accept(int(data.get("id", -1)))
            elif op == "accept_all":
                s.accept_all()
            elif op == "undo":
                s.undo()
            elif op == "redo":
                s.redo()
            else:
                raise InputError(f"Unknown action {op!r}.")
            return _json(HTTPStatus.OK, s.state())

    def _save(self, data: dict[str, Any]) -> Response:
        finish = bool(data.get("finish", False))
        with self.lock:
            if self.out is not None:
                n = self.session.save(self.out)
            else:
                n = len(self.session.points()[0])
                if n == 0 and finish is False:
                    raise InputError("Nothing to save: accept suggestions or add pairs first.")
            self.saved = n
        if finish:
            self.finished.set()
            if self.on_finish is not None:
                self.on_finish()
        return _json(HTTPStatus.OK, {"saved": n, "path": None if self.out is None else str(self.out),
                                     "finished": finish})


class _Handler(BaseHTTPRequestHandler):
    app: PickApp  # set on the subclass made per server
    protocol_version = "HTTP/1.1"

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            response = _json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
        else:
            body = self.rfile.read(length) if length else b""
            response = self.app.handle(method, self.path, dict(self.headers.items()), body)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(response.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print a traceback when a browser drops a connection."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):  # a reload or a closed tab cancels its requests
            return
        super().handle_error(request, client_address)


class PickServer:
    """Bind 127.0.0.1:``port`` (0: any free port) and serve a :class:`PickApp` built for the bound port.

    Raises
    ------
    InputError
        The port is in use or cannot be bound.
    """

    def __init__(self, make_app: Callable[[int], PickApp], port: int = 0) -> None:
        try:
            self.httpd = _QuietServer((HOST, port), _Handler, bind_and_activate=True)
        except OSError as err:
            raise InputError(f"Cannot listen on {HOST}:{port} ({err.strerror or err}); choose another --port "
                             "(0 picks a free one).") from None
        self.port = int(self.httpd.server_address[1])
        self.app = make_app(self.port)
        self.httpd.RequestHandlerClass = type("Handler", (_Handler,), {"app": self.app})
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address, token included."""
        return self.app.url

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()
