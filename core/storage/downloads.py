"""Download links for large files: a process-wide registry of short-lived capability tokens.

The Export page issues a token for a file inside the workspace; the app's ``GET /download/<token>``
route (``routes()``, mounted by ``streamlit_app.py``) streams that file from disk in small chunks, so a
530 MB VGG-16 export is never held in the server's memory. A token is 128 random bits
(``secrets.token_urlsafe(16)``), names one file for one owner, and expires (``TTL_S``, one hour).

In single-user mode (owner None) a link is a bearer token: whoever has the URL gets the file while it
lives. With sign-in on, a link is issued to the signed-in owner and the route serves it only to a
request that carries that owner's sign-in (``routes(identify=...)`` reads it from the request); anyone
else, the same user signed out included, gets the same 404 as for an unknown token.

Pure Python: Starlette is only imported by ``routes()`` / ``middleware()``, which the server calls.
"""
from __future__ import annotations

import importlib
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core import i18n
from core.i18n import N_, _
from core.storage import workspace

TTL_S = 3600.0  # a link lives one hour; the Export page hands out a fresh one on its next run
ROUTE = "download"  # the URL path segment: /download/<token>
NOT_FOUND = N_("This download link is unknown or has expired (links last one hour, and end when the server "
             "restarts or the file is deleted). Open the Export step again for a fresh link.\n")


@dataclass(frozen=True)
class Grant:
    """One issued link: which file, under which name, for whom, until when (time.time() seconds)."""
    path: Path
    filename: str
    owner: str | None
    expires: float


_lock = threading.Lock()
_grants: dict[str, Grant] = {}


def _inside_workspace(path: Path) -> Path:
    """The resolved file, or ValueError when it is not a file inside the workspace."""
    root = workspace.home().resolve()
    real = Path(path).resolve()
    if not real.is_relative_to(root):
        raise ValueError(_("{path} is outside the workspace {root}; only files under the workspace can be "
                           "downloaded — export the model into the workspace first").format(path=path, root=root))
    if not real.is_file():
        raise ValueError(_("{path} is not a file; export it first, then ask for a link").format(path=path))
    return real


def _prune(now: float) -> None:
    for token in [t for t, g in _grants.items() if g.expires <= now]:
        del _grants[token]


def issue(path: str | Path, filename: str, owner: str | None = None, ttl: float = TTL_S,
          now: float | None = None) -> str:
    """A token for downloading ``path`` (a file in the workspace) as ``filename``, valid ``ttl`` seconds.

    The same owner asking again for the same file and name gets the same token while it still has more
    than half its life left, so a page that reruns every second does not fill the registry; another
    owner never gets that token.
    """
    real = _inside_workspace(Path(path))
    if not filename or "/" in filename or "\\" in filename:
        raise ValueError(_("download name {name} must be a plain file name such as 'model.safetensors'").format(
            name=repr(filename)))
    now = time.time() if now is None else now
    with _lock:
        _prune(now)
        for token, g in _grants.items():
            if (g.path, g.filename, g.owner) == (real, filename, owner) and g.expires - now > ttl / 2:
                return token
        token = secrets.token_urlsafe(16)  # 16 bytes = 128 bits
        _grants[token] = Grant(real, filename, owner, now + ttl)
        return token


def grant(token: str, now: float | None = None, owner: str | None = None) -> Grant | None:
    """The live grant behind a token for ``owner``, or None (unknown, expired, another owner's, file gone,
    or no longer in the workspace)."""
    now = time.time() if now is None else now
    with _lock:
        g = _grants.get(token)
        if g is None or g.expires <= now:
            _grants.pop(token, None)
            return None
    if g.owner is not None and g.owner != owner:  # bound to its signed-in owner, not a bearer token
        return None
    try:  # checked again at serving time: the file may have been deleted or swapped for a link
        _inside_workspace(g.path)
    except ValueError:
        return None
    return g


def resolve(token: str, now: float | None = None, owner: str | None = None) -> Path | None:
    """The file a live token names for ``owner``, or None."""
    g = grant(token, now, owner)
    return g.path if g else None


def revoke(token: str) -> None:
    """Forget a token (no error when it is unknown)."""
    with _lock:
        _grants.pop(token, None)


def url(token: str, base_path: str = "") -> str:
    """The server-relative URL of a token's download route (``base_path`` = server.baseUrlPath)."""
    base = base_path.strip("/")
    return f"/{base}/{ROUTE}/{token}" if base else f"/{ROUTE}/{token}"


# --- the HTTP side (Starlette, imported only by the server) --------------------------------------


def routes(base_path: str = "", identify=None) -> list:
    """Starlette routes: ``GET /download/{token}`` streams the file; unknown, expired or another owner's
    tokens get a 404. ``identify(request)`` names the signed-in owner of a request (None: nobody signed in)."""
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Route

    async def download(request):
        # the registry of the module as it is now: Streamlit re-imports an edited module for the pages, and
        # this route must read the tokens the pages issue, not an older copy's
        current = sys.modules.get(__name__) or importlib.import_module(__name__)
        who = identify(request) if identify is not None else None
        g = current.grant(request.path_params["token"], owner=who)
        if g is None:
            with i18n.language(_asked_language(request.headers.get("accept-language", ""))):
                return PlainTextResponse(_(NOT_FOUND), status_code=404)
        # FileResponse reads the file in 64 KiB chunks as the client takes them (and answers Range requests)
        return FileResponse(g.path, filename=g.filename, media_type="application/octet-stream",
                            content_disposition_type="attachment", headers={"Cache-Control": "no-store"})

    return [Route(url("{token}", base_path), download, methods=["GET", "HEAD"])]


def _asked_language(accept: str) -> str:
    """The first language of an Accept-Language header that has a catalog (the route has no session), else English."""
    for item in accept.split(","):
        lang = i18n.normalize(item.split(";")[0].strip())
        if lang:
            return lang
    return i18n.SOURCE


class NoCompression:
    """ASGI middleware: downloads go out as they are on disk.

    Streamlit wraps every route in gzip (level 9). Model weights barely compress, and compressing a
    530 MB file costs tens of CPU-seconds and drops Content-Length, so the browser cannot show progress.
    Dropping Accept-Encoding on the download path makes the gzip layer pass the bytes through.
    """

    def __init__(self, app, base_path: str = ""):
        self.app = app
        self.prefix = url("", base_path)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith(self.prefix):
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"])
        await self.app(scope, receive, send)


def middleware(base_path: str = "") -> list:
    """The Starlette middleware the download route needs (see NoCompression)."""
    from starlette.middleware import Middleware

    return [Middleware(NoCompression, base_path=base_path)]
