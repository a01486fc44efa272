"""The browser client's files as HTTP resources (/wsservice.js, /wsservice.d.ts).

Imported when a Site is made, not with the package: twisted.web.static raises deprecation
warnings at import, which ``python -m wsservice.tokens`` must not print.
"""

from __future__ import annotations

import os

from twisted.web.server import Request
from twisted.web.static import File

# the npm package folder holding wsservice.js and wsservice.d.ts
CLIENT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


class ClientFile(File):
    """One file of the browser client: revalidated on every use (a server upgrade must not
    leave pages on an old client), and importable from pages of any origin (a public file
    sent without credentials: the WebSocket's own Origin check is what guards sessions)."""

    # by extension, as File does, but ours only: '.ts' would otherwise be MPEG video
    contentTypes = {".js": "text/javascript; charset=utf-8",
                    ".ts": "application/typescript; charset=utf-8"}
    contentEncodings: dict[str, str] = {}

    def render_GET(self, request: Request) -> bytes | int:
        """Serve the file with ``Cache-Control: no-cache`` (its Last-Modified revalidates)."""
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"access-control-allow-origin", b"*")
        return super().render_GET(request)


def client_resource(name: str) -> ClientFile:
    """The resource serving ``name`` of the browser client's folder."""
    return ClientFile(os.path.join(CLIENT_DIR, name))
