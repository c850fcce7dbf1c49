"""The websocket feed: a versioned JSON protocol over the `websockets` library (asyncio).

Each connection is greeted with `hello` (protocol version, session id, configuration, limits).
A session is a numbered sequence of events: the app's own input (microphone, file, demo) is one
session; a client that sends audio gets a session of its own. Every event goes out with its
sequence number. Each client reads through its own bounded queue: when it falls behind, the
oldest events are dropped, counted and announced in a `dropped` message, and the engine and the
other clients never wait for it. A client that reconnects with `?session=ID&last_seq=N` gets the
events it missed replayed from the session's bounded log (a `replay` message says how many, and
how many the log no longer had). Clients may send audio: a JSON `start` (sample rate, format
`pcm16` or `float32`, channels), then binary frames, then `stop`. Malformed messages get an
`error` message with the reason and the connection stays open. docs/feed.md and
app/feed.schema.json document the protocol.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import numpy as np

from app.bus import EventBus, Subscription
from app.live import StreamRunner
from app.sources import AudioBlock
from engine.timebase import SAMPLE_RATE

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_CLIENT_QUEUE = 500
DEFAULT_LOG_ITEMS = 5000
MAX_CLIENT_BACKLOG_S = 30.0  # client audio waiting for compute beyond this is dropped, counted
MAX_KEPT_SESSIONS = 64  # ended client sessions kept for reconnection
FORMATS = {"pcm16": np.dtype("<i2"), "float32": np.dtype("<f4")}
ALLOWED_RATES = range(8_000, 192_001)


def new_session_id() -> str:
    """A random, URL-safe session id."""
    return secrets.token_urlsafe(9)


@dataclass
class FeedSession:
    """One numbered event sequence clients can follow and resume."""

    session_id: str
    bus: EventBus
    kind: str  # "input" (the app's own source) or "client" (audio sent by a client)
    ended: bool = False
    runner: StreamRunner | None = None
    task: asyncio.Task[None] | None = None
    audio: "ClientAudio | None" = None
    info: dict[str, Any] = field(default_factory=dict)


class ClientAudio:
    """Audio a client sent, waiting for compute: bounded, oldest dropped and counted."""

    def __init__(self, sample_rate: int, fmt: str, channels: int) -> None:
        self.sample_rate = sample_rate
        self.dtype = FORMATS[fmt]
        self.channels = channels
        self._blocks: deque[np.ndarray] = deque()
        self._held = 0
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped_samples = 0
        self.received_samples = 0
        self._resampler: Any = None
        if sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32")

    def decode(self, data: bytes) -> np.ndarray:
        """Binary frame -> 16 kHz mono float32; raises ValueError with the reason."""
        step = self.dtype.itemsize * self.channels
        if len(data) % step:
            raise ValueError(
                f"binary frame of {len(data)} bytes is not a whole number of "
                f"{self.channels}-channel {self.dtype.name} samples ({step} bytes each)"
            )
        raw = np.frombuffer(data, dtype=self.dtype).reshape(-1, self.channels)
        samples = raw.astype(np.float32)
        if self.dtype.kind == "i":
            samples /= 32768.0
        samples = samples.mean(axis=1) if self.channels > 1 else samples[:, 0]
        if not np.isfinite(samples).all():
            raise ValueError("audio frame contains NaN or infinite samples")
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return np.ascontiguousarray(samples, dtype=np.float32)

    def push(self, samples: np.ndarray) -> None:
        self.received_samples += len(samples)
        self._blocks.append(samples)
        self._held += len(samples)
        while self._held > MAX_CLIENT_BACKLOG_S * SAMPLE_RATE and len(self._blocks) > 1:
            dropped = self._blocks.popleft()
            self._held -= len(dropped)
            self.dropped_samples += len(dropped)
        self._ready.set()

    def close(self) -> None:
        if self._resampler is not None and not self._closed:
            tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if len(tail):
                self._blocks.append(tail)
        self._closed = True
        self._ready.set()

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        loop = asyncio.get_running_loop()
        while True:
            while not self._blocks:
                if self._closed:
                    return
                self._ready.clear()
                await self._ready.wait()
            samples = self._blocks.popleft()
            self._held -= len(samples)
            yield AudioBlock(samples, loop.time())


class FeedServer:
    """Serves sessions to websocket clients; `pool` (app.compute.ComputePool) runs their audio.

    The pool is shared with the app's own input, so client streams are batched with it through
    the engine's scheduler on the one compute thread. Without a pool the server only relays.
    """

    def __init__(
        self,
        config: dict[str, Any],
        pool: Any | None,
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        client_queue: int = DEFAULT_CLIENT_QUEUE,
        log_items: int = DEFAULT_LOG_ITEMS,
    ) -> None:
        self.config = config
        self.pool = pool
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.client_queue = client_queue
        self.log_items = log_items
        self.sessions: OrderedDict[str, FeedSession] = OrderedDict()
        self.main_session: FeedSession | None = None
        self.connections: set[_Connection] = set()
        self.errors_sent = 0
        self._server: Any = None

    # --- sessions ---------------------------------------------------------------------------

    def add_input_session(self, session_id: str, bus: EventBus) -> FeedSession:
        """Register the app's own input as the session new clients follow."""
        session = FeedSession(session_id, bus, kind="input")
        self.sessions[session_id] = session
        self.main_session = session
        return session

    def end_session(self, session_id: str) -> None:
        """Mark a session ended: publish `end` so followers know nothing more comes."""
        session = self.sessions.get(session_id)
        if session is not None and not session.ended:
            session.ended = True
            session.bus.publish_payload({"type": "end", "session": session_id})
            session.bus.close()

    def _forget_old_sessions(self) -> None:
        ended = [s for s in self.sessions.values() if s.kind == "client" and s.ended]
        for s in ended[: max(0, len(ended) - MAX_KEPT_SESSIONS)]:
            del self.sessions[s.session_id]

    # --- serving ----------------------------------------------------------------------------

    def _authorised(self, connection: Any, request: Any) -> Any:
        if self.token is None:
            return None
        header = request.headers.get("Authorization", "")
        query = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        offered = header[7:] if header.lower().startswith("bearer ") else query
        if offered and hmac.compare_digest(offered.encode(), self.token.encode()):
            return None
        return connection.respond(
            HTTPStatus.UNAUTHORIZED, "a bearer token is required (Authorization header or ?token=)\n"
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (port 0 picks a free one); returns the port."""
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._handle, host, port, max_size=self.max_message_bytes,
            process_request=self._authorised, ping_interval=20, ping_timeout=20,
        )
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _send(self, ws: Any, message: dict[str, Any]) -> None:
        await ws.send(json.dumps(message, separators=(",", ":")))

    async def _error(self, ws: Any, reason: str) -> None:
        self.errors_sent += 1
        await self._send(ws, {"type": "error", "reason": reason})

    def _hello(self, session: FeedSession | None, session_id: str, resumed: bool) -> dict[str, Any]:
        return {
            "type": "hello", "protocol": PROTOCOL_VERSION, "session": session_id,
            "session_kind": session.kind if session else "client",
            "resumed": resumed, "last_seq": session.bus.last_seq if session else 0,
            "ended": session.ended if session else False,
            "config": self.config,
            "limits": {
                "max_message_bytes": self.max_message_bytes, "client_queue": self.client_queue,
                "log_items": self.log_items, "max_client_backlog_s": MAX_CLIENT_BACKLOG_S,
            },
            "audio_formats": sorted(FORMATS), "accepts_audio": self.pool is not None,
        }

    def dropped_events(self) -> int:
        """Events dropped so far for the clients connected now (each counts its own)."""
        return sum(c.sub.dropped for c in self.connections if c.sub is not None)

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        conn = _Connection(self, ws)
        self.connections.add(conn)
        try:
            await conn.serve()
        except ConnectionClosed:
            pass  # the client went away; its session (if any) is flushed in cleanup
        finally:
            self.connections.discard(conn)
            await conn.cleanup()


class _Connection:
    """One client: its subscription, its sender task and (if it sends audio) its session."""

    def __init__(self, server: FeedServer, ws: Any) -> None:
        self.server = server
        self.ws = ws
        self.sub: Subscription | None = None
        self.sender: asyncio.Task[None] | None = None
        self.own: FeedSession | None = None
        self.following: FeedSession | None = None
        self.dropped_total = 0

    async def serve(self) -> None:
        query = parse_qs(urlsplit(self.ws.request.path).query)
        wanted = query.get("session", [None])[0]
        last_seq_text = query.get("last_seq", ["0"])[0]
        server = self.server
        if wanted is not None:
            if wanted not in server.sessions:
                await server._error(self.ws, f"unknown session {wanted!r} (expired or never existed)")
                await self.ws.close(1008, "unknown session")
                return
            if not last_seq_text.isdigit():
                await server._error(self.ws, f"last_seq must be a whole number >= 0, got {last_seq_text!r}")
                await self.ws.close(1008, "bad last_seq")
                return
            session: FeedSession | None = server.sessions[wanted]
            session_id = wanted
        else:
            session = server.main_session
            session_id = session.session_id if session else new_session_id()
        await server._send(self.ws, server._hello(session, session_id, resumed=wanted is not None))
        self.session_id = session_id
        if session is not None:
            await self._follow(session, int(last_seq_text) if wanted is not None else None)
        async for message in self.ws:
            await self._on_message(message)

    async def _follow(self, session: FeedSession, after_seq: int | None) -> None:
        """Subscribe to `session`; with `after_seq`, first replay what the log still holds."""
        if self.sender is not None:
            self.sender.cancel()
        if self.sub is not None:
            self.sub.unsubscribe()
        self.sub = session.bus.subscribe(self.server.client_queue)
        self.following = session
        if after_seq is not None:
            items, lost = session.bus.replay_after(after_seq)
            await self.server._send(self.ws, {
                "type": "replay", "session": session.session_id, "after_seq": after_seq,
                "count": len(items), "lost": lost,
            })
            for item in items:
                await self.ws.send(item.wire)
        self.sender = asyncio.create_task(self._pump(self.sub))

    async def _pump(self, sub: Subscription) -> None:
        while True:
            item = await sub.get()
            if item is None:
                return
            if sub.unreported_drops:
                self.dropped_total += sub.unreported_drops
                await self.server._send(self.ws, {
                    "type": "dropped", "count": sub.unreported_drops, "total": self.dropped_total,
                    "next_seq": item.seq,
                })
                sub.unreported_drops = 0
            await self.ws.send(item.wire)

    async def _on_message(self, message: str | bytes) -> None:
        server = self.server
        if isinstance(message, bytes):
            if self.own is None or self.own.audio is None:
                await server._error(self.ws, "binary audio before a `start` message")
                return
            try:
                self.own.audio.push(self.own.audio.decode(message))
            except ValueError as exc:
                await server._error(self.ws, str(exc))
            return
        try:
            msg = json.loads(message)
        except json.JSONDecodeError as exc:
            await server._error(self.ws, f"not JSON: {exc.msg} at character {exc.pos}")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            await server._error(self.ws, "a message must be a JSON object with a string `type`")
            return
        kind = msg["type"]
        if kind == "start":
            await self._start(msg)
        elif kind == "stop":
            if self.own is None or self.own.audio is None:
                await server._error(self.ws, "`stop` without a `start`")
            else:
                self.own.audio.close()
        elif kind == "ping":
            await server._send(self.ws, {"type": "pong", "last_seq": self.following.bus.last_seq if self.following else 0})
        else:
            await server._error(self.ws, f"unknown message type {kind!r} (expected start, stop or ping)")

    async def _start(self, msg: dict[str, Any]) -> None:
        server = self.server
        if server.pool is None:
            await server._error(self.ws, "this server does not accept audio")
            return
        if self.own is not None:
            await server._error(self.ws, "audio already started on this connection")
            return
        rate, fmt, channels = msg.get("sample_rate"), msg.get("format", "pcm16"), msg.get("channels", 1)
        if not isinstance(rate, int) or isinstance(rate, bool) or rate not in ALLOWED_RATES:
            await server._error(self.ws, f"`sample_rate` must be an integer in 8000..192000, got {rate!r}")
            return
        if fmt not in FORMATS:
            await server._error(self.ws, f"`format` must be one of {sorted(FORMATS)}, got {fmt!r}")
            return
        if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 8:
            await server._error(self.ws, f"`channels` must be an integer in 1..8, got {channels!r}")
            return
        session_id = self.session_id if self.session_id not in server.sessions else new_session_id()
        bus = EventBus(server.log_items)
        session = FeedSession(session_id, bus, kind="client",
                              info={"sample_rate": rate, "format": fmt, "channels": channels})
        session.audio = ClientAudio(rate, fmt, channels)
        stream = await server.pool.open_stream()
        session.runner = StreamRunner(stream, bus, server.pool.executor, fast=True,
                                      dropped=lambda: session.audio.dropped_samples if session.audio else 0)
        server.sessions[session_id] = session
        server._forget_old_sessions()
        await self._follow(session, None)
        await server._send(self.ws, {"type": "started", "session": session_id, **session.info})
        session.task = asyncio.create_task(self._run_client_session(session))
        self.own = session

    async def _run_client_session(self, session: FeedSession) -> None:
        assert session.runner is not None and session.audio is not None
        try:
            await session.runner.run(session.audio.blocks())
        finally:
            self.server.end_session(session.session_id)

    async def cleanup(self) -> None:
        if self.own is not None and self.own.audio is not None:
            self.own.audio.close()  # the stream is flushed and its events stay replayable
        if self.sender is not None:
            self.sender.cancel()
        if self.sub is not None:
            self.sub.unsubscribe()
