"""The websocket feed with a real server on a loopback port and real `websockets` clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pathlib import Path

import jsonschema
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.bus import EventBus
from app.compute import ComputePool
from app.server import FeedServer
from engine.events import EVENT_TYPES, CaptionPartial, SpeakerActivity, Stats
from tests.test_app_fakes import FakeEngine, tone

TIMEOUT = 5
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "app" / "feed.schema.json").read_text())
SERVER = jsonschema.Draft202012Validator({"$ref": "#/$defs/server_message", "$defs": SCHEMA["$defs"]})
CLIENT = jsonschema.Draft202012Validator({"$ref": "#/$defs/client_message", "$defs": SCHEMA["$defs"]})


async def recv(ws: Any, validate: bool = True) -> dict[str, Any]:
    """The next message, checked against the published JSON Schema (skip for bulk traffic)."""
    msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    if validate or msg["type"] != "speaker_activity":
        SERVER.validate(msg)
    return msg


async def recv_until(ws: Any, kind: str, validate: bool = True) -> list[dict[str, Any]]:
    got = []
    while True:
        msg = await recv(ws, validate)
        got.append(msg)
        if msg["type"] == kind:
            return got


async def make_server(**kw: Any) -> tuple[FeedServer, EventBus, str, FakeEngine]:
    engine = FakeEngine()
    server = FeedServer({"models": "fake"}, ComputePool(engine), **kw)
    bus = EventBus(log_items=kw.get("log_items", 5000))
    server.add_input_session("main", bus)
    port = await server.start("127.0.0.1", 0)
    return server, bus, f"ws://127.0.0.1:{port}/", engine


async def test_clients_get_hello_then_numbered_events() -> None:
    server, bus, url, _ = await make_server()
    try:
        async with connect(url) as a, connect(url) as b:
            for ws in (a, b):
                hello = await recv(ws)
                assert hello["type"] == "hello" and hello["protocol"] == 1
                assert hello["session"] == "main" and hello["config"] == {"models": "fake"}
            for i in range(5):
                bus.publish(CaptionPartial(f"p{i}", i, i + 1, "alice"))
            server.end_session("main")
            for ws in (a, b):
                msgs = await recv_until(ws, "end")
                assert [m["seq"] for m in msgs] == [1, 2, 3, 4, 5, 6]
                assert msgs[2]["text"] == "p2" and msgs[2]["start_s"] == 0.04
    finally:
        await server.close()


async def test_slow_client_never_holds_back_the_others() -> None:
    server, bus, url, _ = await make_server(client_queue=20)
    big = SpeakerActivity(0, ("a", "b", "c"), tuple((0.123456, 0.234567, 0.345678) for _ in range(200)))
    try:
        async with connect(url, max_queue=1, compression=None) as slow, connect(url) as fast:
            await recv(slow), await recv(fast)
            published = received = extra_until = 0
            # publish until the slow client (which reads nothing) has lost events, then 100 more;
            # the fast client keeps reading everything meanwhile
            while server.dropped_events() == 0 or published < extra_until:
                if server.dropped_events() == 0:
                    extra_until = published + 100
                for _ in range(20):
                    bus.publish(big)
                published += 20
                while received < published:
                    received += (await recv(fast, validate=False))["type"] == "speaker_activity"
                assert published < 5000, "the slow client never fell behind"
            server.end_session("main")
            assert (await recv(fast))["type"] == "end"
            # now the slow client reads: it was told what it lost, and the tally is exact
            msgs = await recv_until(slow, "end", validate=False)
            drops = [m for m in msgs if m["type"] == "dropped"]
            events = [m for m in msgs if m["type"] == "speaker_activity"]
            assert drops and drops[-1]["total"] == sum(d["count"] for d in drops)
            assert len(events) + drops[-1]["total"] == published
            seqs = [m["seq"] for m in events]
            assert seqs == sorted(seqs)
            assert drops[0]["next_seq"] > drops[0]["count"]
    finally:
        await server.close()


async def test_reconnect_replays_missed_events() -> None:
    server, bus, url, _ = await make_server()
    try:
        async with connect(url) as ws:
            session = (await recv(ws))["session"]
            for i in range(3):
                bus.publish(CaptionPartial(f"p{i}", i, i + 1))
            last = [await recv(ws) for _ in range(2)][-1]["seq"]
        for i in range(3, 6):  # published while the client is away
            bus.publish(CaptionPartial(f"p{i}", i, i + 1))
        async with connect(f"{url}?session={session}&last_seq={last}") as ws:
            hello = await recv(ws)
            assert hello["resumed"] is True and hello["last_seq"] == 6
            replay = await recv(ws)
            assert replay == {"type": "replay", "session": "main", "after_seq": 2, "count": 4, "lost": 0}
            got = [await recv(ws) for _ in range(4)]
            assert [m["seq"] for m in got] == [3, 4, 5, 6]
            bus.publish(CaptionPartial("live", 9, 10))
            assert (await recv(ws))["seq"] == 7
        async with connect(f"{url}?session=nope&last_seq=1") as ws:
            await recv(ws)  # the error
            with pytest.raises(ConnectionClosed):
                await recv(ws)
    finally:
        await server.close()


async def test_client_audio_gets_its_own_stream() -> None:
    server, bus, url, engine = await make_server()
    try:
        async with connect(url) as listener, connect(url) as talker:
            await recv(listener), await recv(talker)
            await talker.send(json.dumps({"type": "start", "sample_rate": 8000, "format": "pcm16", "channels": 2}))
            started = await recv(talker)
            assert started["type"] == "started" and started["session"] != "main"
            audio = tone(2.5, amp=0.5)[::2]  # 8 kHz
            pcm = (np.repeat(audio[:, None], 2, axis=1) * 32767).astype("<i2")
            for i in range(0, len(pcm), 800):
                await talker.send(pcm[i : i + 800].tobytes())
            await talker.send(json.dumps({"type": "stop"}))
            msgs = await recv_until(talker, "end")
            finals = [m for m in msgs if m["type"] == "caption_final"]
            assert [f["text"] for f in finals] == ["word0a word0b", "word1a word1b", "word2a word2b"]
            assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1))
            assert abs(engine.streams[0].accepted_samples - 40000) < 200
            bus.publish(CaptionPartial("main only", 0, 1))
            assert (await recv(listener))["text"] == "main only"  # the listener saw none of it
    finally:
        await server.close()


async def test_malformed_messages_get_reasons_and_service_goes_on() -> None:
    server, bus, url, _ = await make_server()
    try:
        async with connect(url) as bad, connect(url) as good:
            await recv(bad), await recv(good)
            cases = [
                ("{not json", "not JSON"),
                ("[1, 2]", "JSON object"),
                (json.dumps({"type": "dance"}), "unknown message type"),
                (b"\x00\x01", "before a `start`"),
                (json.dumps({"type": "start", "sample_rate": "fast"}), "sample_rate"),
                (json.dumps({"type": "start", "sample_rate": 16000, "format": "mp3"}), "format"),
                (json.dumps({"type": "stop"}), "without a `start`"),
            ]
            for message, reason in cases:
                await bad.send(message)
                err = await recv(bad)
                assert err["type"] == "error" and reason in err["reason"], (message, err)
            await bad.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "float32"}))
            assert (await recv(bad))["type"] == "started"
            await bad.send(b"\x00\x00\x80")  # not a whole float32
            assert "whole number" in (await recv(bad))["reason"]
            await bad.send(np.array([np.nan, 0.0], dtype="<f4").tobytes())
            assert "NaN" in (await recv(bad))["reason"]
            bus.publish(CaptionPartial("still here", 0, 1))
            assert (await recv(good))["text"] == "still here"
            await bad.send(json.dumps({"type": "ping"}))
            assert (await recv(bad))["type"] == "pong"
    finally:
        await server.close()


async def test_oversized_message_closes_only_that_client() -> None:
    server, bus, url, _ = await make_server(max_message_bytes=1000)
    try:
        async with connect(url) as big, connect(url) as other:
            await recv(big), await recv(other)
            await big.send(b"\x00" * 5000)
            with pytest.raises(ConnectionClosed) as closed:
                await recv(big)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            bus.publish(CaptionPartial("after", 0, 1))
            assert (await recv(other))["text"] == "after"
    finally:
        await server.close()


async def test_token_by_header_or_query() -> None:
    server, bus, url, _ = await make_server(token="s3cret")
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            async with connect(url + "?token=wrong"):
                pass
        async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert (await recv(ws))["type"] == "hello"
        async with connect(url + "?token=s3cret") as ws:
            assert (await recv(ws))["type"] == "hello"
    finally:
        await server.close()


def test_schema_covers_every_engine_event_and_client_message() -> None:
    from app.bus import EventBus
    from tests.test_app_fakes import FakeStream, tone

    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    bus = EventBus()
    stream = FakeStream()
    for event in stream.accept(tone(3.2)) + stream.flush():
        bus.publish(event)
    bus.publish(Stats(audio_frames=10, windows=2, rtf=0.3, latency_ms={"compute": 12.0}))
    kinds = set()
    for item in bus:
        SERVER.validate(item.payload)
        kinds.add(item.payload["type"])
    assert kinds == set(EVENT_TYPES.values())
    for message in ({"type": "start", "sample_rate": 16000, "format": "float32"}, {"type": "stop"}, {"type": "ping"}):
        CLIENT.validate(message)
    with pytest.raises(jsonschema.ValidationError):
        SERVER.validate({"type": "caption_final", "seq": 0, "text": "x"})
