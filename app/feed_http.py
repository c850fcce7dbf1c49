"""Plain HTTP on the feed's port: the browser page, a health check, the session list and exports.

The websocket feed and these routes share one port: `websockets` hands every request to
`FeedServer`'s `process_request` hook, which answers requests without `Upgrade: websocket` here.
- `GET /` and the page's files (`app/web/`, served as they are: no build step, no CDN), without
  the token, so a browser can load the page that then asks for it;
- `GET /healthz`: 200 and a small JSON status (no token: for service managers, load balancers);
- `GET /api/sessions`: the sessions a client can follow (token required when set);
- `GET /api/sessions/ID/export.KIND` (KIND: transcript, srt, vtt, rttm): the session's captions
  and turns so far, rendered by `app.writers`, the renderers the command line's files use.
Nothing else is served; file names come from a fixed list read at start, so no path escapes.
"""

from __future__ import annotations

import json
import re
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from app.writers import RENDERERS, rttm_text

if TYPE_CHECKING:
    from app.server import FeedServer

WEB_DIR = Path(__file__).resolve().parent / "web"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
    ".ico": "image/x-icon",
}
EXPORT_TYPES = {
    "transcript": ("text/plain; charset=utf-8", "txt"), "srt": ("application/x-subrip; charset=utf-8", "srt"),
    "vtt": ("text/vtt; charset=utf-8", "vtt"), "rttm": ("text/plain; charset=utf-8", "rttm"),
}
EXPORT_PATH = re.compile(r"/api/sessions/([A-Za-z0-9_-]{1,64})/export\.([a-z]+)")
# the page talks only to its own origin; nothing inline, nothing from elsewhere
PAGE_POLICY = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; "
               "media-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def page_files(folder: Path = WEB_DIR) -> dict[str, Path]:
    """URL path -> file for every servable file of the page (`/` is index.html)."""
    files = {f"/{p.name}": p for p in folder.iterdir() if p.is_file() and p.suffix in CONTENT_TYPES}
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def response(status: HTTPStatus, body: bytes | str, content_type: str = "text/plain; charset=utf-8",
             extra: dict[str, str] | None = None) -> Response:
    """An HTTP response that closes the connection (the websocket library's HTTP is one-shot)."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    headers = Headers()
    headers["Date"] = formatdate(usegmt=True)
    headers["Connection"] = "close"
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(data))
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    for key, value in (extra or {}).items():
        headers[key] = value
    return Response(status.value, status.phrase, headers, data)


def json_response(status: HTTPStatus, payload: Any) -> Response:
    return response(status, json.dumps(payload, separators=(",", ":")), "application/json")


def handle_http(server: "FeedServer", request: Request, authorised: bool) -> Response:
    """Answer one plain HTTP GET (the websocket library only parses GET requests)."""
    path = request.path.split("?", 1)[0]
    if path == "/healthz":
        return json_response(HTTPStatus.OK, server.health())
    if path in server.page:
        file = server.page[path]
        return response(HTTPStatus.OK, file.read_bytes(), CONTENT_TYPES[file.suffix],
                        {"Content-Security-Policy": PAGE_POLICY, "Referrer-Policy": "no-referrer"})
    if path == "/api/sessions" or path.startswith("/api/"):
        if not authorised:
            return response(HTTPStatus.UNAUTHORIZED, "a bearer token is required (Authorization: Bearer TOKEN)\n",
                            extra={"WWW-Authenticate": 'Bearer realm="unispeech-live"'})
        if path == "/api/sessions":
            return json_response(HTTPStatus.OK, {"sessions": server.describe_sessions()})
        match = EXPORT_PATH.fullmatch(path)
        if match:
            return _export(server, match.group(1), match.group(2))
    return response(HTTPStatus.NOT_FOUND, f"not found: {path[:80]}\n")


def _export(server: "FeedServer", session_id: str, kind: str) -> Response:
    session = server.sessions.get(session_id)
    if session is None:
        return response(HTTPStatus.NOT_FOUND, "unknown session (expired or never existed)\n")
    if kind not in EXPORT_TYPES:
        return response(HTTPStatus.NOT_FOUND, f"no export {kind!r}; one of {', '.join(EXPORT_TYPES)}\n")
    text = rttm_text(session.record, session_id) if kind == "rttm" else RENDERERS[kind](session.record)
    content_type, ext = EXPORT_TYPES[kind]
    name = f"{session_id}.{ext}"
    return response(HTTPStatus.OK, text, content_type,
                    {"Content-Disposition": f'attachment; filename="{name}"'})
