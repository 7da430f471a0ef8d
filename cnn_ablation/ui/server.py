"""How the dashboard is served: the pages of dashboard.py as a Streamlit `st.App` (Starlette
under uvicorn) with one middleware in front of Streamlit's own routes.

`cnn-ablation dashboard` (what `make run` and the Docker image start) runs `streamlit run` on
this file (Streamlit finds `app` below). The middleware closes what Streamlit serves before, and
apart from, the page's password check (cnn_ablation/ui/access.py), which runs inside a
session's script:

- `/_stcore/metrics` (Streamlit's OpenMetrics: sessions, cache sizes) is not served: 404;
- a file upload (`/_stcore/upload_file/<session>/<file>`) is accepted only for a session that
  has been let in: a visitor at the password prompt gets 403 and the server holds nothing.
  (Uploads are also capped at 50 MB, `server.maxUploadSize`, before any byte is kept.)

It also tells a new browser session what the first page's table needs before the page asks:
every page (index.html, the same file for every page) gets `<link rel="modulepreload">` for the
data grid's modules and its stylesheet (preload.TABLE_CHUNKS and what they import), so the
browser fetches and compiles them while Streamlit's own code starts and the script runs,
instead of after the table's data has arrived (Plotly's code comes after the table,
preload.py), and a line telling Streamlit the app's base path (BASE_SCRIPT).

`streamlit run app.py` still serves the same pages, without this middleware.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from cnn_ablation.ui.access import has_entered  # once, at start: not in the event loop per request
from cnn_ablation.ui.preload import table_preload_links

SCRIPT = Path(__file__).with_name("dashboard.py")
METRICS = "/_stcore/metrics"
UPLOAD = "/_stcore/upload_file/"


# The dashboard's pages' URL paths (main.py's pages, named by their files)
PAGES = ("new_run", "runs", "compare", "studies")
# A browser opening /runs first asks /runs/_stcore/health (as if /runs were the app's base
# path), gets 404, waits and asks /_stcore/health: 0.2 s before the first message. On one of
# our pages it is told its base instead: the path without the page's name (a proxy's prefix
# and server.baseUrlPath stay); any other path is left to Streamlit's own search.
BASE_SCRIPT = ("<script>(() => { const pages = " + repr(list(PAGES)).replace("'", '"') + "; "
               "const path = location.pathname.replace(/\\/+$/, ''); "
               "const last = path.slice(path.lastIndexOf('/') + 1); "
               "if (!pages.includes(last)) return; "
               "window.__streamlit = Object.assign({}, window.__streamlit, "
               "{BACKEND_BASE_URL: location.origin + path.slice(0, path.length - last.length)});"
               " })();</script>")
PRELOAD = (BASE_SCRIPT + table_preload_links()).encode()  # once, at start


class CloseBeforeEntry:
    """Pure ASGI middleware: 404 for the metrics endpoint, 403 for an upload from a session
    that has not been let in; a page's HTML gets the table's module preloads; everything else
    passes untouched (websocket included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = refused(scope.get("path", ""))
            if refusal is not None:
                status, text = refusal
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": text.encode()})
                return
            if PRELOAD and scope.get("method") == "GET" and is_page(scope.get("path", "")):
                # the page's 10 KB uncompressed (Streamlit gzips for browsers), to edit it
                scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", [])
                                              if k.lower() != b"accept-encoding"]}
                send = with_preload(send)
        await self.app(scope, receive, send)


def is_page(path: str) -> bool:
    """A page's address (/, /runs, /base/studies), whose answer is Streamlit's index.html:
    not a file (no dot in its last part), not under Streamlit's routes."""
    return "/_stcore/" not in path and "/static/" not in path and "/component" not in path \
        and "." not in path.rstrip("/").rsplit("/", 1)[-1]


def with_preload(send):
    """`send` with the module preloads put before </head> of an uncompressed HTML answer (its
    Content-Length changed to match); any other answer passes as it is."""
    held: dict = {}
    body = bytearray()

    async def sending(message):
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            if headers.get(b"content-type", b"").startswith(b"text/html") \
                    and b"content-encoding" not in headers:
                held["start"] = message
                return
        elif message["type"] == "http.response.body" and "start" in held:
            body.extend(message.get("body", b""))
            if message.get("more_body"):
                return
            html = bytes(body).replace(b"</head>", PRELOAD + b"</head>", 1)
            start = held.pop("start")
            start["headers"] = [(k, v) for k, v in start.get("headers", [])
                                if k != b"content-length"] + [
                (b"content-length", str(len(html)).encode())]
            await send(start)
            await send({"type": "http.response.body", "body": html})
            return
        await send(message)

    return sending


def refused(path: str) -> tuple[int, str] | None:
    """(status, text) when the request for `path` is refused, else None."""
    if path.rstrip("/").endswith(METRICS):
        return 404, "not served by cnn-ablation\n"
    if UPLOAD in path:
        session = path.split(UPLOAD, 1)[1].split("/", 1)[0]
        if not has_entered(session):
            return 403, "upload refused: enter the dashboard's password first\n"
    return None


app = st.App(SCRIPT, middleware=[Middleware(CloseBeforeEntry)])

if __name__ == "__main__":
    app.run()
