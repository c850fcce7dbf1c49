"""The feed as a service: HTTP on the feed's port (page, health, sessions, exports), browser
tokens, client limits, hostile input, back-pressure and the replay grace period.

Real servers on loopback port 0 with real `websockets` clients and real HTTP requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app import server as server_module
from app.bus import EventBus
from app.compute import ComputePool
from app.feed_json import MAX_DEPTH, ControlError, nesting_depth, parse_control
from app.server import FeedServer
from app.writers import RENDERERS, rttm_text
from engine.events import CaptionPartial
from tests.test_app_fakes import FakeEngine, tone
from tests.test_ws_feed import SCHEMA, SERVER, recv, recv_until

TIMEOUT = 5


async def make_server(**kw: Any) -> tuple[FeedServer, EventBus, int]:
    server = FeedServer({"models": "fake"}, ComputePool(FakeEngine()), **kw)
    bus = EventBus()
    server.add_input_session("main", bus)
    port = await server.start("127.0.0.1", 0)
    return server, bus, port


async def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A real HTTP GET from another thread (urllib blocks), so the server's loop keeps running."""

    def get() -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    return await asyncio.to_thread(get)


def bearer_subprotocol(token: str) -> str:
    return "bearer." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


# --- HTTP on the feed's port ---------------------------------------------------------------


async def test_page_health_and_exports_share_the_port() -> None:
    server, bus, port = await make_server()
    try:
        status, headers, body = await http_get(port, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'src="/app.js"' in body and "default-src 'self'" in headers["Content-Security-Policy"]
        for name in ("app.js", "style.css", "mic-worklet.js"):
            status, headers, _ = await http_get(port, f"/{name}")
            assert status == 200, name
        assert (await http_get(port, "/../server.py"))[0] == 404
        assert (await http_get(port, "/nope.html"))[0] == 404
        status, _, body = await http_get(port, "/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok" and health["clients"] == 0
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await recv(ws)
            # a whole session: the fake's captions, a revision, turns; then the same renderers
            for event in server.pool.engine.new_stream().accept(tone(3.0)):
                bus.publish(event)
            server.end_session("main")
            await recv_until(ws, "end")
            assert json.loads((await http_get(port, "/healthz"))[2])["clients"] == 1
        status, _, body = await http_get(port, "/api/sessions")
        assert status == 200 and json.loads(body)["sessions"][0] == {
            "session": "main", "kind": "input", "ended": True, "last_seq": bus.last_seq}
        record = server.sessions["main"].record
        assert record.captions, "the export record saw no captions"
        for kind in ("transcript", "srt", "vtt", "rttm"):
            status, headers, body = await http_get(port, f"/api/sessions/main/export.{kind}")
            expected = rttm_text(record, "main") if kind == "rttm" else RENDERERS[kind](record)
            assert status == 200 and body.decode() == expected and expected.strip(), kind
            assert "attachment" in headers["Content-Disposition"]
        assert "word0a word0b" in (await http_get(port, "/api/sessions/main/export.transcript"))[2].decode()
        assert (await http_get(port, "/api/sessions/main/export.mp3"))[0] == 404
        assert (await http_get(port, "/api/sessions/other/export.srt"))[0] == 404
    finally:
        await server.close()


async def test_browser_token_by_subprotocol_and_static_files_without_it() -> None:
    server, bus, port = await make_server(token="s3cret/+=~")
    url = f"ws://127.0.0.1:{port}/"
    try:
        assert (await http_get(port, "/"))[0] == 200  # the page itself needs no token
        assert (await http_get(port, "/app.js"))[0] == 200
        assert (await http_get(port, "/healthz"))[0] == 200
        assert (await http_get(port, "/api/sessions"))[0] == 401
        assert (await http_get(port, "/api/sessions", {"Authorization": "Bearer nope"}))[0] == 401
        assert (await http_get(port, "/api/sessions/main/export.srt"))[0] == 401
        ok = {"Authorization": "Bearer " + "s3cret/+=~"}
        assert (await http_get(port, "/api/sessions", ok))[0] == 200
        async with connect(url, subprotocols=["unispeech-live", bearer_subprotocol("s3cret/+=~")]) as ws:
            assert ws.subprotocol == "unispeech-live"
            assert (await recv(ws))["type"] == "hello"
        for wrong in (bearer_subprotocol("s3cret"), "bearer.%%%", "bearer."):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, subprotocols=["unispeech-live", wrong]):
                    pass
            assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus):  # a right header does not excuse a wrong subprotocol
            async with connect(url, subprotocols=["unispeech-live", bearer_subprotocol("x")],
                               additional_headers={"Authorization": "Bearer s3cret/+=é"}):
                pass
        async with connect(url + "?token=s3cret%2F%2B%3D~") as ws:  # old clients keep working
            assert (await recv(ws))["type"] == "hello"
    finally:
        await server.close()


async def test_websockets_from_other_sites_pages_are_refused() -> None:
    server, bus, port = await make_server()
    url = f"ws://127.0.0.1:{port}/"
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin="http://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        async with connect(url, origin=f"http://127.0.0.1:{port}") as ws:  # the page itself
            assert (await recv(ws))["type"] == "hello"
        async with connect(url) as ws:  # programs send no Origin
            assert (await recv(ws))["type"] == "hello"
    finally:
        await server.close()


async def test_clients_beyond_the_maximum_are_refused_with_a_reason() -> None:
    server, bus, port = await make_server(max_clients=2)
    url = f"ws://127.0.0.1:{port}/"
    try:
        async with connect(url) as a, connect(url) as b:
            await recv(a), await recv(b)
            async with connect(url) as c:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(c.recv(), TIMEOUT)
                assert closed.value.rcvd.code == 1013 and "server full: at most 2 clients" in closed.value.rcvd.reason
            bus.publish(CaptionPartial("still served", 0, 1))
            assert (await recv(a))["text"] == "still served"
            assert server.refused_clients == 1
        async with connect(url) as d:  # room again once the others left
            assert (await recv(d))["type"] == "hello"
    finally:
        await server.close()


# --- hostile input -------------------------------------------------------------------------


def test_parse_control_limits() -> None:
    assert parse_control('{"type": "start", "sample_rate": 16000}') == {"type": "start", "sample_rate": 16000}
    assert nesting_depth('{"a": "[[[[{{{{"}') == 1  # brackets inside strings do not count
    assert nesting_depth(r'{"a": "\"[[[["}') == 1
    for text, reason in [
        ("[" * 1500 + "]" * 1500, "nested 1500 deep"),  # json.loads: RecursionError
        ("[" * 5000 + "]" * 5000, "control messages take at most"),
        ('{"a": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}", "nested"),
        ('{"type": "start", "sample_rate": ' + "9" * 4000 + "}", "number too long (4000"),  # int(): ValueError
        ('{"x": 1.' + "5" * 100 + "}", "number too long"),
        ('{"x": NaN}', "NaN is not JSON"),
        ("x" * 10_000, "control messages take at most"),
        ("{not json", "not JSON"),
    ]:
        with pytest.raises(ControlError, match=reason.replace("(", r"\(")):
            parse_control(text)


async def test_hostile_messages_get_short_errors_and_the_connection_stays() -> None:
    server, bus, port = await make_server()
    try:
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await recv(ws)
            cases = [
                ("[" * 1500 + "]" * 1500, "nested 1500 deep"),  # a RecursionError before the limits
                ("{" * 5000 + "}" * 5000, "control messages take at most"),  # the 10 KB
                ('{"type":"start","sample_rate":' + "9" * 4050 + "}", "number too long"),
                (json.dumps({"type": "x" * 100_000}), "control messages take at most"),
                (json.dumps({"type": "y" * 1000}), "unknown message type"),
                (json.dumps({"type": "start", "sample_rate": "z" * 1000}), "sample_rate"),
                (json.dumps({"type": "auth", "token": "t"}), "send the token with the handshake"),
            ]
            for message, reason in cases:
                await ws.send(message)
                err = await recv(ws)
                assert err["type"] == "error" and reason in err["reason"], (reason, err)
                assert len(err["reason"]) <= 300, "error echoes too much"
            assert server.errors_sent == len(cases)
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv(ws))["type"] == "pong"
    finally:
        await server.close()


async def test_resume_beyond_the_log_or_with_a_bad_last_seq_is_an_error() -> None:
    server, bus, port = await make_server()
    try:
        for i in range(3):
            bus.publish(CaptionPartial(f"p{i}", i, i + 1))
        for query, reason in [("session=main&last_seq=999999", "beyond the session's newest event (3)"),
                              ("last_seq=4", "beyond"), ("session=main&last_seq=-1", "whole number"),
                              ("session=main&last_seq=" + "9" * 40, "whole number")]:
            async with connect(f"ws://127.0.0.1:{port}/?{query}") as ws:
                err = await recv(ws)
                assert err["type"] == "error" and reason in err["reason"], (query, err)
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(ws)
                assert closed.value.rcvd.code == 1008
        async with connect(f"ws://127.0.0.1:{port}/?last_seq=1") as ws:  # the app's input, from seq 1
            assert (await recv(ws))["resumed"] is True
            assert (await recv(ws))["count"] == 2
            assert [(await recv(ws))["seq"] for _ in range(2)] == [2, 3]
    finally:
        await server.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
messages = (
    json_values.map(json.dumps)
    | st.dictionaries(st.sampled_from(["type", "sample_rate", "format", "channels"]), json_values, max_size=4).map(json.dumps)
    | st.builds(lambda d: json.dumps({"type": "start", **d}),
                st.dictionaries(st.sampled_from(["sample_rate", "format", "channels"]), json_values, max_size=3))
    | st.text(max_size=200)
    | st.binary(max_size=200)
    | st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
    | st.integers(1, 3000).map(lambda n: '{"type":"start","sample_rate":' + "7" * n + "}")
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages, min_size=1, max_size=6))
@example(batch=['{"type":"start","sample_rate":8000,"format":[]}'])  # crashed `start` once
def test_fuzz_a_real_server_never_drops_the_connection(batch: list[str | bytes]) -> None:
    async def run() -> None:
        server, bus, port = await make_server()
        try:
            async with connect(f"ws://127.0.0.1:{port}/") as ws:
                await recv(ws)
                for message in batch:
                    await ws.send(message)
                await ws.send(json.dumps({"type": "ping"}))  # the connection still answers
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                    if msg["type"] != "speaker_activity":
                        SERVER.validate(msg)
                    if msg["type"] == "error":
                        assert len(msg["reason"]) <= 300 and "internal error" not in msg["reason"], msg
                    if msg["type"] == "pong":
                        break
        finally:
            await server.close()

    asyncio.run(run())


# --- back-pressure -------------------------------------------------------------------------


class HeldEngine(FakeEngine):
    """The scripted engine, with compute held until `release` (so client audio piles up)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def new_stream(self) -> Any:
        stream = super().new_stream()
        accept = stream.accept

        def held_accept(samples: np.ndarray) -> Any:
            assert self.gate.wait(30), "compute held for 30 s"
            return accept(samples)

        stream.accept = held_accept
        return stream


async def test_dropped_audio_is_announced_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "MAX_CLIENT_BACKLOG_S", 1.0)
    engine = HeldEngine()
    server = FeedServer({"models": "fake"}, ComputePool(engine))
    port = await server.start("127.0.0.1", 0)
    try:
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "pcm16"}))
            session = (await recv(ws))["session"]
            pcm = (tone(0.5) * 32767).astype("<i2").tobytes()
            for _ in range(16):  # 8 s while compute is held, into a 1 s backlog
                await ws.send(pcm)
            await ws.send(json.dumps({"type": "ping"}))  # answered after every frame before it
            notices = []
            while (msg := await recv(ws))["type"] != "pong":
                if msg["type"] == "dropped_audio":
                    notices.append(msg)
            # in flight at most: 1 block in compute, 4 in the runner's queue, 1 being queued, 1 s
            # of backlog; everything else was dropped, and each drop announced before the pong
            audio = server.sessions[session].audio
            assert len(notices) >= 16 - 8
            assert all(n["samples"] == 8000 and n["seconds"] == 0.5 and n["session"] == session for n in notices)
            assert notices[-1]["total_samples"] == sum(n["samples"] for n in notices) == audio.dropped_samples
            engine.gate.set()
            await ws.send(json.dumps({"type": "stop"}))
            msgs = await recv_until(ws, "end")
            stats = [m for m in msgs if m["type"] == "stats"]
            assert stats and stats[-1]["dropped_samples"] == audio.dropped_samples
    finally:
        engine.gate.set()
        await server.close()
        server.pool.shutdown()


async def test_closing_the_server_ends_client_streams_even_when_compute_is_stuck() -> None:
    engine = HeldEngine()
    server = FeedServer({"models": "fake"}, ComputePool(engine))
    port = await server.start("127.0.0.1", 0)
    try:
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "pcm16"}))
            session = (await recv(ws))["session"]
            for _ in range(10):  # the runner's queue fills up behind the held compute
                await ws.send((tone(0.5) * 32767).astype("<i2").tobytes())
            await ws.send(json.dumps({"type": "ping"}))
            while (await recv(ws))["type"] != "pong":
                pass
            task = server.sessions[session].task
            await asyncio.wait_for(server.close(flush_timeout_s=0.5), TIMEOUT)
            assert task.done()
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd.code == 1001
    finally:
        engine.gate.set()
        server.pool.shutdown()


async def test_empty_frames_and_audio_after_stop_get_errors() -> None:
    server, bus, port = await make_server()
    try:
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "pcm16"}))
            assert (await recv(ws))["type"] == "started"
            await ws.send(b"")
            assert "empty binary frame" in (await recv(ws))["reason"]
            await ws.send((tone(1.2) * 32767).astype("<i2").tobytes())
            await ws.send(json.dumps({"type": "stop"}))
            await ws.send((tone(0.01) * 32767).astype("<i2").tobytes())
            await ws.send(json.dumps({"type": "stop"}))
            msgs = await recv_until(ws, "end")
            reasons = [m["reason"] for m in msgs if m["type"] == "error"]
            assert any("audio after `stop`: 320 bytes ignored" in r for r in reasons), reasons
            assert any("`stop` again" in r for r in reasons), reasons
            assert len([m for m in msgs if m["type"] == "caption_final"]) == 2
            assert server.pool.engine.streams[0].accepted_samples == 19200  # nothing after `stop`
    finally:
        await server.close()


def test_schema_documents_the_new_messages() -> None:
    defs = SCHEMA["$defs"]
    for name in ("dropped_audio",):
        assert {"$ref": f"#/$defs/{name}"} in defs["server_message"]["oneOf"]
    SERVER.validate({"type": "dropped_audio", "session": "s", "samples": 8000, "seconds": 0.5,
                     "total_samples": 8000, "max_backlog_s": 30.0})


# --- the replay grace period ---------------------------------------------------------------


@pytest.mark.parametrize("grace_s", [0.0, 30.0])
async def test_replay_grace_after_the_input_ends(grace_s: float, capsys: pytest.CaptureFixture[str]) -> None:
    from app.session import InputChoice, LiveSession, SessionOptions, run_headless

    source = InputChoice("file", "t.wav", samples=tone(2.0), speed=None)
    options = SessionOptions(serve=("127.0.0.1", 0), replay_grace_s=grace_s)
    session = LiveSession(FakeEngine(), source, options)
    task = asyncio.create_task(run_headless(session))
    while session.port is None or not session.runner.finished.is_set():
        assert not task.done()
        await asyncio.wait([task], timeout=0.05)
    if grace_s == 0:
        await asyncio.wait_for(task, TIMEOUT)  # exits at the end, as before
        return
    # a client cut off at the end resumes within the grace period and gets everything
    async with connect(f"ws://127.0.0.1:{session.port}/?session={session.session_id}&last_seq=0") as ws:
        assert (await recv(ws))["ended"] is True
        msgs = await recv_until(ws, "end")
        assert [m["type"] for m in msgs].count("caption_final") == 2
    assert not task.done()
    session.stop()  # SIGTERM/SIGINT end the grace period at once
    await asyncio.wait_for(task, TIMEOUT)
    assert "serving replay for 30 s" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command to make a certificate")
async def test_tls_serves_https_and_wss(tmp_path: Path) -> None:
    import ssl
    import subprocess

    from app.server import tls_context

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    server = FeedServer({"models": "fake"}, None)
    port = await server.start("127.0.0.1", 0, ssl=tls_context(str(cert), str(key)))
    client = ssl.create_default_context(cafile=str(cert))
    try:
        def get() -> tuple[int, bytes]:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=client, timeout=TIMEOUT) as r:
                return r.status, r.read()

        status, body = await asyncio.to_thread(get)
        assert status == 200 and json.loads(body)["status"] == "ok"
        async with connect(f"wss://127.0.0.1:{port}/", ssl=client) as ws:
            assert (await recv(ws))["type"] == "hello"
        with pytest.raises(Exception):  # plain http to a TLS port gets nothing useful
            await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", None, TIMEOUT)
    finally:
        await server.close()
    from app.errors import AppError

    with pytest.raises(AppError, match="cannot load"):
        tls_context(str(key), str(cert))


@pytest.mark.parametrize("argv, message", [
    (["--max-clients", "5"], "only make sense with --serve"),
    (["--serve", "0", "--max-clients", "0"], "--max-clients must be at least 1"),
    (["--serve", "0", "--replay-grace", "-1"], "--replay-grace must be 0..86400"),
    (["--serve", "0", "--tls-cert", "c.pem"], "go together"),
    (["--serve", "0", "--tls-cert", "no-such.pem", "--tls-key", "no-such.key"], "no such file"),
])
def test_feed_options_are_checked(argv: list[str], message: str) -> None:
    from app.cli import parse_args
    from app.errors import AppError

    with pytest.raises(AppError, match=message) as refused:
        parse_args(argv)
    assert refused.value.exit_code == 2
    args = parse_args(["--serve", "0", "--max-clients", "3", "--replay-grace", "0"])
    assert (args.max_clients, args.replay_grace) == (3, 0.0)


async def test_a_cancelled_stream_runner_never_hangs_loop_shutdown() -> None:
    """What asyncio.run does at exit (cancel every task, then wait for them) with a full queue."""
    from app.live import StreamRunner
    from app.sources import AudioBlock

    engine = HeldEngine()
    pool = ComputePool(engine)
    runner = StreamRunner(engine.new_stream(), EventBus(), pool.executor, fast=True)
    produced = 0

    async def endless() -> Any:
        nonlocal produced
        while True:
            produced += 1
            yield AudioBlock(tone(0.1), 0.0)

    task = asyncio.create_task(runner.run(endless()))
    while produced < 8:  # compute holds one block, the queue (4) is full, the producer waits
        await asyncio.wait([task], timeout=0.01)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in others:
        t.cancel()
    _, pending = await asyncio.wait(others, timeout=TIMEOUT)
    engine.gate.set()
    pool.shutdown()
    assert not pending, "a task ignored its cancellation (loop shutdown would hang)"
