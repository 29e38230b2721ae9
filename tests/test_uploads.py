"""Visitors' uploads on the server's disk: awaited by their visitor only, removed after their use.

Real files in a cache folder of the test's own; `request` stands in for Gradio's gr.Request, of
which `VisitorFiles` reads the cookies only. The same rules against the real server (cookies,
the file route, Gradio's sweep) are tested in test_app_server.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ser_train.errors import AudioError
from ser_train.uploads import GONE, SECURE_COOKIE, VisitorFiles, visitor_cookie_headers, visitor_of

HOUR_S = 3600


@pytest.fixture
def files(tmp_path, monkeypatch) -> VisitorFiles:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    return VisitorFiles()


def upload(files: VisitorFiles, visitor: str | None, content: bytes = b"RIFF speech", name: str = "speech.wav") -> str:
    """A file as Gradio stores an upload (in a folder named after its bytes), recorded for `visitor`."""
    path = files.folder / content.hex()[:16] / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    files.record_uploads([str(path)], visitor)
    return str(path)


def request(visitor: str | None):
    return SimpleNamespace(cookies={SECURE_COOKIE: visitor} if visitor else {})


def test_an_upload_is_read_by_its_visitor_only_and_removed_after_its_use(files):
    path = upload(files, "alice")
    assert files.may_read(path, "alice")
    assert not files.may_read(path, "bob") and not files.may_read(path, None)

    with files.used(path, request("alice")) as used:
        assert used == path and Path(path).read_bytes() == b"RIFF speech"
    assert not Path(path).exists() and not Path(path).parent.exists()
    assert not files.may_read(path, "alice")
    with pytest.raises(AudioError, match=GONE):  # analysing it again: a sentence, not a traceback
        with files.used(path, request("alice")):
            pass


def test_another_visitors_upload_is_refused_and_left_for_its_owner(files):
    path = upload(files, "alice")
    for stranger in ("bob", None):
        with pytest.raises(AudioError, match=GONE):
            with files.used(path, request(stranger)):
                pass
    assert Path(path).is_file()
    with files.used(path, request("alice")):
        pass
    assert not Path(path).exists()


def test_the_same_bytes_uploaded_twice_stay_until_the_last_use(files):
    """Gradio stores identical uploads at one path: the first use must not take it from the second."""
    path = upload(files, "alice")
    assert upload(files, "bob") == path
    with files.used(path, request("alice")):
        with pytest.raises(AudioError, match=GONE):  # one upload, one use
            with files.used(path, request("alice")):
                pass
    assert Path(path).is_file() and files.may_read(path, "bob") and not files.may_read(path, "alice")
    with files.used(path, request("bob")):
        pass
    assert not Path(path).exists()


def test_a_file_replaced_by_an_upload_not_yet_recorded_is_left_for_that_upload(files):
    """Between Gradio moving an upload into place and the middleware recording it, the last use
    of an earlier upload of the same bytes must not remove the new file."""
    path = upload(files, "alice")
    replacement = Path(path).with_name(".incoming")
    replacement.write_bytes(b"RIFF speech")
    os.replace(replacement, path)  # what Gradio's upload route does: a new file, renamed into place
    with files.used(path, request("alice")):
        pass
    assert Path(path).is_file()
    files.record_uploads([path], "bob")  # the new upload's response goes out
    with files.used(path, request("bob")):
        pass
    assert not Path(path).exists()


def test_a_removed_file_leaves_gradios_bookkeeping(files):
    path = upload(files, "alice")
    tracked = {path}
    files.blocks = SimpleNamespace(temp_file_sets=[tracked, set()])
    with files.used(path, request("alice")):
        pass
    assert tracked == set()


def test_files_outside_the_cache_folder_and_none_pass_through_untouched(files, tmp_path):
    own = tmp_path / "own.wav"
    own.write_bytes(b"RIFF mine")
    with files.used(str(own), None) as used:
        assert used == str(own)
    assert own.read_bytes() == b"RIFF mine"
    with files.used(None, None) as nothing:
        assert nothing is None


def test_a_client_without_cookies_can_use_its_uploads_but_nobody_can_read_them(files):
    path = upload(files, None)
    assert not files.may_read(path, None)
    with files.used(path, request(None)):
        pass
    assert not Path(path).exists()


def test_the_sweep_removes_broken_off_uploads_and_empty_folders_once_old(files):
    old = time.time() - HOUR_S
    partial = files.folder / "tmpa1b2c3d4"  # where Gradio writes an upload while it arrives
    arriving = files.folder / "tmpe5f6g7h8"
    empty = files.folder / "0123456789abcdef"
    for path in (partial, arriving):
        path.write_bytes(b"RIFF half a recording")
    empty.mkdir()
    awaited = Path(upload(files, "alice"))
    for path in (partial, empty, awaited, awaited.parent):
        os.utime(path, (old, old))

    files.sweep_strays(max_age_s=HOUR_S / 2)

    assert not partial.exists() and not empty.exists()
    assert arriving.is_file()  # still being written to, as far as its age says
    assert awaited.is_file()  # in a folder: Gradio's own sweep decides about it


def test_uploads_never_used_are_forgotten_once_old(files):
    path = upload(files, "alice")
    files.forget_unused(max_age_s=HOUR_S)
    assert files.may_read(path, "alice")
    files.forget_unused(max_age_s=0)
    assert not files.may_read(path, "alice")


def test_the_visitor_cookie_is_set_for_https_frames_and_for_http():
    headers = [value.decode() for _, value in visitor_cookie_headers("token123")]
    secure, plain = headers
    assert secure.startswith(f"{SECURE_COOKIE}=token123;") and "SameSite=none" in secure and "Secure" in secure
    assert "HttpOnly" in secure and "HttpOnly" in plain and "Secure" not in plain
    assert visitor_of({"ser-visitor-plain": "token123"}) == "token123"
    assert visitor_of({}) is None


def test_stream_chunks_the_route_replaced_are_read_then_go_when_a_later_one_is_taken(files):
    """Gradio's stream route keeps an event's newest chunk only: once the handler takes chunk 3,
    chunks 1 and 2 that it never took never will be. They are the visitor's speech, so the handler
    gets them, oldest first, to read, and they go after; the visitor's other uploads (a recording
    awaiting Analyse) and another session's chunks stay."""
    recording = upload(files, "alice", b"RIFF recording")
    chunks = [upload(files, "alice", f"{n} RIFF chunk".encode(), "audio.wav") for n in range(1, 5)]
    theirs = upload(files, "bob", b"bob's RIFF chunk", "audio.wav")
    for chunk in chunks:
        files.record_stream_chunk("alice-tab", chunk)
    files.record_stream_chunk("bob-tab", theirs)
    with files.used(chunks[2], request("alice")) as taken, files.skipped_chunks("alice-tab", taken, request("alice")) as skipped:
        assert skipped == chunks[:2] and [Path(chunk).read_bytes() for chunk in skipped] == [b"1 RIFF chunk", b"2 RIFF chunk"]
    assert [Path(chunk).exists() for chunk in chunks] == [False, False, False, True]
    assert Path(recording).is_file() and Path(theirs).is_file() and files.may_read(theirs, "bob")
    with files.used(chunks[3], request("alice")) as taken, files.skipped_chunks("alice-tab", taken, request("alice")) as skipped:
        assert skipped == []  # the next one: nothing earlier is left
    assert not Path(chunks[3]).exists() and Path(recording).is_file()
    # The same chunk path sent twice (a body sent again) but uploaded once: read once, and its
    # bookkeeping left clean, so that a later upload of the same bytes goes after its one use.
    twice, taken_next = upload(files, "alice", b"twice RIFF chunk", "audio.wav"), upload(files, "alice", b"next RIFF chunk", "audio.wav")
    for chunk in (twice, twice, taken_next):
        files.record_stream_chunk("alice-tab", chunk)
    with files.used(taken_next, request("alice")) as taken, files.skipped_chunks("alice-tab", taken, request("alice")) as skipped:
        assert skipped == [twice]
    assert not Path(twice).exists()
    again = upload(files, "alice", b"twice RIFF chunk", "audio.wav")
    with files.used(again, request("alice")):
        pass
    assert not Path(again).exists()
    # After Stop, a chunk still waiting for its handler is left to it.
    late = upload(files, "alice", b"late RIFF chunk", "audio.wav")
    files.record_stream_chunk("alice-tab", late)
    files.forget_stream("alice-tab")
    with files.used(late, request("alice")) as taken, files.skipped_chunks("alice-tab", taken, request("alice")) as skipped:
        assert skipped == []
    assert not Path(late).exists()


@pytest.mark.parametrize("body", [b'{"data": [{"path": "%s"}], "session_hash": "tab"}', b"not json", b'{"data": 3}'])
def test_the_middleware_notes_a_streamed_chunk_and_passes_the_request_on_unchanged(files, body):
    import asyncio

    from ser_train.uploads import VisitorFilesMiddleware

    chunk = upload(files, "alice", b"RIFF chunk", "audio.wav")
    body = body.replace(b"%s", chunk.encode())
    received = []

    async def app(scope, receive, send):
        received.append((await receive())["body"])

    messages = [{"type": "http.request", "body": body[:5], "more_body": True}, {"type": "http.request", "body": body[5:]}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        pass

    scope = {"type": "http", "method": "POST", "path": "/gradio_api/stream/event123", "headers": [(b"cookie", f"{SECURE_COOKIE}=alice".encode())]}
    asyncio.run(VisitorFilesMiddleware(app, files)(scope, receive, send))
    assert received == [body]  # Gradio reads the whole body, as sent
    assert files._stream_chunks == ({"tab": [str(Path(chunk).resolve())]} if body.startswith(b'{"data": [') else {})
