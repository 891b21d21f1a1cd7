"""The page itself: three static files from inside the package, nothing from any other origin."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from ragglm.api_error import ApiError

__all__ = ["STATIC", "install_page"]

STATIC = Path(__file__).parent / "static"
_TYPES = {"app.js": "text/javascript", "app.css": "text/css", "i18n.js": "text/javascript"}
# The page loads only what this server sends; a browser refuses anything else it is tricked into.
_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           "connect-src 'self'; frame-ancestors 'none'")


def install_page(app: FastAPI) -> None:
    headers = {"Content-Security-Policy": _POLICY, "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        if name not in _TYPES:
            raise ApiError(404, f"no static file {name!r}", "not_found_error")
        return FileResponse(STATIC / name, media_type=_TYPES[name], headers=headers)
