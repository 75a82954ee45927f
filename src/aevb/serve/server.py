"""The explorer's HTTP server: the page's three files and five JSON/PNG endpoints, on the
standard library's ``ThreadingHTTPServer``.

Why the standard library: the explorer is a local tool for one person (and a few tabs), whose
work is the model's, not the server's; ``http.server`` has no dependency to install or keep
up, threads answer concurrent requests while the model runs one call at a time under a lock,
and routing five endpoints by hand is a dozen lines. It is not a public web server: it binds
127.0.0.1 unless told otherwise.

Endpoints (fixed, for other tools too):
``GET /api/info``, ``GET /api/decode?z=v1,...[&label=k][&layer=l]`` (PNG),
``POST /api/encode[?label=k]`` (an image; the code and the reconstruction as JSON),
``GET /api/interpolate?a=I&b=J&steps=S[&mode=slerp]`` (a PNG strip), ``GET /api/codes``,
``GET /api/manifold?n=N[&z=...][&label=k][&layer=l]`` (decodings over the pad, a PNG grid).
A bad request is a 400 with ``{"error": reason}``, an unknown path a 404; only the page's own
files are served, by name, never a path of the disk.
"""

from __future__ import annotations

import json
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aevb.serve.explorer import MAX_UPLOAD_BYTES, BadRequest, Explorer

__all__ = ["STATIC", "make_server"]

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
"""The only files served: the page shipped in the package (nothing from a CDN)."""
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DRAINED = 16 * 1024 * 1024
"""A refused upload up to this size is read to its end before the 400 (then the client sees
the answer); a larger one is not read, and the connection closes."""


def _static(name: str) -> bytes:
    return resources.files("aevb.serve").joinpath("static").joinpath(name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    explorer: Explorer  # set on the server's own subclass
    server_version = "aevb-explorer"
    quiet = True

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "only GET and POST"})

    do_DELETE = do_PATCH = do_PUT

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, max_num_fields=16).items()}
        try:
            self._route(method, url.path, query)
        except BadRequest as error:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except ValueError as error:  # a query parse_qs refuses (too many fields)
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": f"bad query: {error}"})
        except Exception as error:  # a bug: say so in one line, never a traceback
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR,
                            {"error": f"{type(error).__name__}: {error}"})

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        explorer = self.explorer
        if method == "GET" and path in STATIC:
            name, kind = STATIC[path]
            self._send(HTTPStatus.OK, _static(name), kind)
        elif method == "GET" and path == "/api/info":
            self._send_json(HTTPStatus.OK, explorer.info())
        elif method == "GET" and path == "/api/codes":
            self._send_json(HTTPStatus.OK, explorer.codes_2d())
        elif method == "GET" and path == "/api/decode":
            self._send(HTTPStatus.OK, explorer.decode_png(query.get("z"), query.get("label"),
                                                          query.get("layer")), "image/png")
        elif method == "GET" and path == "/api/manifold":
            self._send(HTTPStatus.OK, explorer.manifold_png(
                query.get("n"), query.get("z"), query.get("label"), query.get("layer")),
                "image/png")
        elif method == "GET" and path == "/api/interpolate":
            self._send(HTTPStatus.OK, explorer.interpolate_png(
                query.get("a"), query.get("b"), query.get("steps"), query.get("mode")),
                "image/png")
        elif method == "POST" and path == "/api/encode":
            self._send_json(HTTPStatus.OK, explorer.encode_upload(self._upload(),
                                                                  query.get("label")))
        elif path in STATIC or path.startswith("/api/") and path[5:] in (
                "info", "codes", "decode", "manifold", "interpolate", "encode"):
            self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} {path}?"})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path[:80]}"})

    def _upload(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest("POST /api/encode needs a Content-Length")
        if int(length) > MAX_UPLOAD_BYTES:
            self._discard(int(length))  # so that the client reads the 400, not a broken pipe
            raise BadRequest(f"the upload is over {MAX_UPLOAD_BYTES // 1024 // 1024} MiB")
        return self.rfile.read(int(length))

    def _discard(self, length: int) -> None:
        """Read and drop a refused body up to DRAINED bytes; a larger one closes the
        connection after the answer."""
        if length > DRAINED:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _send_json(self, status: HTTPStatus, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 0,
                quiet: bool = True) -> ThreadingHTTPServer:
    """A server for ``explorer`` bound to ``host:port`` (port 0: a free one), not yet serving
    (``serve_forever``). Another host than the loopback is a warning: anyone who reaches it
    can use the model."""
    if host not in LOOPBACK:
        warnings.warn(f"aevb explore: serving on {host}, not only this machine: anyone who can"
                      " reach it can query the model", stacklevel=2)
    handler = type("Handler", (_Handler,), {"explorer": explorer, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(explorer: Explorer, host: str, port: int) -> None:  # pragma: no cover - blocks
    server = make_server(explorer, host, port, quiet=False)
    bound = server.server_address[1]
    name = f"[{host}]" if ":" in host else host
    print(f"aevb explore: http://{name}:{bound}/  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
