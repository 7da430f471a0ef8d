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

`streamlit run app.py` still serves the same pages, without this middleware.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from cnn_ablation.ui.access import has_entered  # once, at start: not in the event loop per request

SCRIPT = Path(__file__).with_name("dashboard.py")
METRICS = "/_stcore/metrics"
UPLOAD = "/_stcore/upload_file/"


class CloseBeforeEntry:
    """Pure ASGI middleware: 404 for the metrics endpoint, 403 for an upload from a session
    that has not been let in; everything else passes untouched (websocket included)."""

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
        await self.app(scope, receive, send)


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
