"""Nothing of a visitor kept: every upload (a file, a microphone recording, a live chunk) is
removed from the server once the request that uses it is answered, and until then only the
visitor who uploaded it can fetch it back (as the page's own player does).

Gradio keeps each upload in its cache folder (GRADIO_TEMP_DIR) with no expiry and serves it at
/gradio_api/file=PATH to any client that has the URL. Here:

* Each client gets a visitor cookie, a random token set on the first response to a request that
  carries none: the page for a browser, /config for gradio_client (which sends the cookies of
  that response with every later request). As Gradio does for its login cookie, it is set twice:
  SameSite=None; Secure for a page served over https inside another site's frame, as a Space
  is, and a plain one for http. (Browsers that refuse third-party cookies altogether give the
  page's player nothing to fetch with; the analysis itself still works, see the last line.)
* `VisitorFilesMiddleware`, around Gradio's routes, records each upload as awaiting its use by
  the visitor who sent it, and serves a file of the cache folder only to a visitor it awaits;
  anyone else gets 404, as for a file that does not exist.
* A handler wraps its use of an upload in `VisitorFiles.used(path, request)`: the upload must be
  one this visitor sent and has not used yet (otherwise one sentence says it is gone), and once
  the handler returns and no other request awaits or uses that file, it is removed.

Every file of the cache folder is taken for a visitor's (this app returns no files of its own),
so the folder must be the app's alone: app.py makes one unless GRADIO_TEMP_DIR names one.
Gradio names an upload's folder by a hash of its bytes, so the same file uploaded twice (by one
visitor or two) is one path on disk, removed with the last use of it. Uploads no request ever
uses (an aborted request, a tab closed after recording) are removed by Gradio's own cache sweep
(`DELETE_CACHE`, passed to gr.Blocks) once UNUSED_UPLOAD_MAX_AGE_S old; what that sweep does not
see, the partial file of an upload broken off half-way, `sweep_strays` removes on the same clock.
A client without cookies (curl) can still upload and use its files, and nobody can fetch those
back; but another client without cookies that learnt such a path could have it analysed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.requests import cookie_parser
from starlette.responses import PlainTextResponse, Response

from ser_train.errors import AudioError

SECURE_COOKIE = "ser-visitor"  # SameSite=None; Secure: sent from a Space's frame over https
PLAIN_COOKIE = "ser-visitor-plain"  # the same token for http (a local server)
TOKEN_BYTES = 16  # 128 random bits per visitor
# An upload not analysed within this many seconds is removed (the visitor records it again).
UNUSED_UPLOAD_MAX_AGE_S = int(os.environ.get("SER_UNUSED_UPLOAD_MAX_AGE_S", 15 * 60))
SWEEPS_PER_MAX_AGE = 4  # so an unused upload is gone at most a quarter of the age after it
SWEEP_EVERY_S = max(1, UNUSED_UPLOAD_MAX_AGE_S // SWEEPS_PER_MAX_AGE)
DELETE_CACHE = (SWEEP_EVERY_S, UNUSED_UPLOAD_MAX_AGE_S)  # gr.Blocks(delete_cache=...): (how often, how old)
UPLOAD_ROUTE = "/gradio_api/upload"
STREAM_ROUTE = "/gradio_api/stream/"  # + event id: a chunk for a streaming event (+ "/close": its end)
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")  # the route and its deprecated spelling
GONE = (
    "That recording is no longer on the server: recordings and uploads are removed once they "
    "have been used, analysed or refused. Record or upload it again."
)


class RecordingGone(AudioError):
    """GONE: a recording used already, removed unused after UNUSED_UPLOAD_MAX_AGE_S, or another visitor's."""


def visitor_of(cookies: Mapping[str, str]) -> str | None:
    """The visitor token among a request's cookies, or None for a client without one."""
    return cookies.get(SECURE_COOKIE) or cookies.get(PLAIN_COOKIE)


def visitor_cookie_headers(token: str) -> list[tuple[bytes, bytes]]:
    """The Set-Cookie headers that give a client the visitor token `token` (rendered by Starlette)."""
    response = Response()
    response.set_cookie(SECURE_COOKIE, token, httponly=True, samesite="none", secure=True)
    response.set_cookie(PLAIN_COOKIE, token, httponly=True, samesite="lax")
    return [header for header in response.raw_headers if header[0] == b"set-cookie"]


def requested_file(url_path: str) -> str | None:
    """The file a /gradio_api/file= URL path asks for, or None for any other route."""
    for route in FILE_ROUTES:
        if route in url_path:
            return url_path.split(route, 1)[1]
    return None


class VisitorFiles:
    """Which visitor awaits which upload of Gradio's cache folder, and each upload's removal.

    `blocks`, the app once it is built, is told of each removal: Gradio's sweep never drops a
    file it finds gone from its lists, which would otherwise grow with every request.
    """

    def __init__(self, blocks=None):
        self.folder = Path(get_upload_folder()).resolve()
        self.blocks = blocks
        self._awaiting: dict[str, Counter[str | None]] = {}  # file -> visitor -> uploads not used yet
        self._recorded: dict[str, tuple[float, int]] = {}  # file -> (when, inode) at its last upload
        self._in_use: Counter[str] = Counter()  # file -> requests using it now
        self._stream_chunks: dict[str, list[str]] = {}  # session -> chunk files sent to its streams, oldest first
        self._last_stream_chunk: dict[str, str] = {}  # session -> the chunk its stream's handler took last
        self._lock = threading.Lock()

    def holds(self, path: str | os.PathLike) -> bool:
        """Whether `path` is in Gradio's cache folder, that is, something a visitor sent."""
        return Path(os.path.abspath(path)).resolve().is_relative_to(self.folder)

    def record_uploads(self, paths: list[str], visitor: str | None) -> None:
        """Gradio stored `paths` for `visitor` (None: a client without cookies)."""
        with self._lock:
            for key in map(_key, paths):
                self._awaiting.setdefault(key, Counter())[visitor] += 1
                with contextlib.suppress(FileNotFoundError):
                    self._recorded[key] = (time.time(), os.stat(key).st_ino)

    def may_read(self, path: str, visitor: str | None) -> bool:
        """Whether `visitor` may fetch `path`: only an upload of theirs not used yet."""
        with self._lock:
            return visitor is not None and self._awaiting.get(_key(path), Counter())[visitor] > 0

    @contextlib.contextmanager
    def used(self, path: str | None, request) -> Iterator[str | None]:
        """`path` while a request uses it; a file of the cache folder must be an upload of this
        request's visitor not used yet (RecordingGone says it is gone otherwise), and is removed
        after the block unless another request awaits or uses it. Other paths (an in-process
        call's own files) and None pass through untouched."""
        if path is None or not self.holds(path):
            yield path
            return
        key = _key(path)
        self._take(key, visitor_of(request.cookies) if request is not None else None)
        try:
            yield path
        finally:
            self._release(key)

    def _take(self, key: str, visitor: str | None) -> None:
        with self._lock:
            if not os.path.isfile(key) or not self._take_if_awaited(key, visitor):
                raise RecordingGone(GONE)

    def _take_if_awaited(self, key: str, visitor: str | None) -> bool:
        """Mark `key` in use by a request of `visitor`, if they await it (the lock held)."""
        awaiting = self._awaiting.get(key, Counter())
        if awaiting[visitor] <= 0:
            return False
        awaiting[visitor] -= 1
        self._in_use[key] += 1
        return True

    def _release(self, key: str) -> None:
        with self._lock:
            self._in_use[key] -= 1
            self._remove_if_unused(key)

    def _remove_if_unused(self, key: str) -> None:
        """Remove `key` unless a request uses it or a visitor still awaits it (the lock held)."""
        if self._in_use[key] or +self._awaiting.get(key, Counter()):
            return
        self._in_use.pop(key, None)
        self._awaiting.pop(key, None)
        _, inode = self._recorded.pop(key, (0.0, None))
        self._remove(key, inode)

    def record_stream_chunk(self, session: str, path: str) -> None:
        """`path` was sent to a streaming event of `session` (Gradio's stream route)."""
        if self.holds(path):
            with self._lock:
                self._stream_chunks.setdefault(session, []).append(_key(path))

    @contextlib.contextmanager
    def skipped_chunks(self, session: str, path: str | None, request) -> Iterator[list[str]]:
        """The chunks of `session`'s stream sent before `path`, oldest first, that its handler
        (taking `path` now) did not take: Gradio's stream route keeps only an event's newest chunk
        while its handler is busy, and the handler takes one chunk at a time, so they never will
        be. They hold the visitor's speech all the same, so the handler reads them in the block,
        keeping the stream whole; after it they are removed (their visitor's await dropped)."""
        if path is None or not self.holds(path):
            yield []
            return
        key, visitor = _key(path), visitor_of(request.cookies)
        with self._lock:
            chunks = self._stream_chunks.get(session, [])
            skipped = chunks[: chunks.index(key)] if key in chunks else []
            if key in chunks:
                self._stream_chunks[session] = chunks[len(skipped) + 1 :]
            self._last_stream_chunk[session] = key
            taken = [skipped_key for skipped_key in skipped if self._take_if_awaited(skipped_key, visitor)]
        try:
            yield [chunk for chunk in taken if os.path.isfile(chunk)]
        finally:
            for taken_key in taken:
                self._release(taken_key)
            with self._lock:  # those not taken (no longer awaited) go too; a path sent twice, once
                for skipped_key in dict.fromkeys(chunk for chunk in skipped if chunk not in taken):
                    self._remove_if_unused(skipped_key)

    def repeats_last_chunk(self, session: str, path: str | None) -> bool:
        """Whether `path` is the chunk `session`'s stream handler took last. Gradio's stream route
        sometimes runs a handler again on the chunk it just had (when the next chunk's POST lands
        as the run begins), and that chunk is gone by then: it was heard, and is no loss."""
        with self._lock:
            return path is not None and self.holds(path) and self._last_stream_chunk.get(session) == _key(path)

    def forget_stream(self, session: str) -> None:
        """`session`'s stream stopped: a chunk still waiting for its handler is left to it (or,
        when none comes, to the sweep)."""
        with self._lock:
            self._stream_chunks.pop(session, None)
            self._last_stream_chunk.pop(session, None)

    def _remove(self, key: str, inode: int | None) -> None:
        """Remove the file `key` (and its folder, left empty), unless an upload of the same bytes
        replaced it after the last one recorded: that upload's own use will remove it."""
        with contextlib.suppress(FileNotFoundError):
            if os.stat(key).st_ino != inode:
                return
            os.remove(key)
            with contextlib.suppress(OSError):  # not empty: another file of the same folder
                os.rmdir(os.path.dirname(key))
        as_gradio_spells_it = os.path.join(get_upload_folder(), os.path.relpath(key, self.folder))
        for tracked in getattr(self.blocks, "temp_file_sets", []):
            tracked.difference_update({key, as_gradio_spells_it})

    def forget_unused(self, max_age_s: float = UNUSED_UPLOAD_MAX_AGE_S) -> None:
        """Forget the uploads awaited for longer than `max_age_s` (Gradio's sweep removes them)."""
        cutoff = time.time() - max_age_s
        with self._lock:
            for key, (when, _) in list(self._recorded.items()):
                if when < cutoff and not self._in_use[key]:
                    self._awaiting.pop(key, None)
                    self._recorded.pop(key)

    def sweep_strays(self, max_age_s: float = UNUSED_UPLOAD_MAX_AGE_S) -> None:
        """Remove what Gradio's sweep does not track: the partial file of an upload broken off
        half-way (Gradio writes uploads to the top of its folder, then moves each complete one
        into a folder of its own) and folders left empty, untouched for `max_age_s`."""
        cutoff = time.time() - max_age_s
        for entry in os.scandir(self.folder):
            with contextlib.suppress(OSError):  # gone meanwhile, or a folder still holding files
                if entry.stat().st_mtime >= cutoff:
                    continue
                if entry.is_dir():
                    os.rmdir(entry.path)
                else:
                    os.remove(entry.path)

    def middleware(self) -> Middleware:
        """The middleware to pass to Gradio's app (launch(app_kwargs={"middleware": [...]}))."""
        return Middleware(VisitorFilesMiddleware, files=self)

    @contextlib.asynccontextmanager
    async def sweeping(self, app) -> AsyncIterator[None]:
        """A lifespan for Gradio's app (launch(app_kwargs={"lifespan": ...})): every SWEEP_EVERY_S,
        forget the unused uploads and sweep the strays, for as long as the server runs."""

        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(SWEEP_EVERY_S)
                self.forget_unused()
                await asyncio.to_thread(self.sweep_strays)

        task = asyncio.create_task(sweep_forever())
        try:
            yield
        finally:
            task.cancel()


def _key(path: str | os.PathLike) -> str:
    """One spelling per file: the absolute path with links resolved, as Gradio compares them."""
    return str(Path(os.path.abspath(path)).resolve())


class VisitorFilesMiddleware:
    """ASGI middleware: gives new clients a visitor cookie, records uploads by visitor, and
    serves a file of Gradio's cache folder only to the visitor whose upload awaits its use."""

    def __init__(self, app, files: VisitorFiles):
        self.app = app
        self.files = files

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        visitor = visitor_of(cookie_parser(_header(scope, b"cookie")))
        wanted = requested_file(scope["path"])
        if wanted is not None and self.files.holds(wanted) and not self.files.may_read(wanted, visitor):
            await PlainTextResponse("Not found", status_code=404)(scope, receive, send)
            return
        new_cookie = [] if visitor else visitor_cookie_headers(secrets.token_urlsafe(TOKEN_BYTES))
        if scope["method"] == "POST" and STREAM_ROUTE in scope["path"] and not scope["path"].endswith("/close"):
            body = await _request_body(receive)
            self._record_stream_chunk(body)
            receive = _replayed(body, receive)
        is_upload = scope["method"] == "POST" and scope["path"].endswith(UPLOAD_ROUTE)
        status, body = 0, bytearray()

        async def send_on(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *new_cookie]}
            elif is_upload and message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if status == 200 and not message.get("more_body", False):
                    # Recorded before the client sees the paths, so its next request finds them.
                    self.files.record_uploads(json.loads(body), visitor)
            await send(message)

        await self.app(scope, receive, send_on)

    def _record_stream_chunk(self, body: bytes) -> None:
        """Note which session a streamed chunk's file was sent for (the route's PredictBody)."""
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):  # not a chunk's body: Gradio answers it
            request = json.loads(body)
            for value in request["data"]:
                if isinstance(value, dict) and isinstance(value.get("path"), str):
                    self.files.record_stream_chunk(str(request["session_hash"]), value["path"])


async def _request_body(receive) -> bytes:
    """The whole body of an HTTP request, read from its ASGI `receive`."""
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _replayed(body: bytes, receive):
    """An ASGI `receive` that gives the app the body already read, then what `receive` gives."""
    given = False

    async def replay():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _header(scope, name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in scope["headers"] if key == name), "")
