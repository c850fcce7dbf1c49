"""The websocket feed: a versioned JSON protocol over the `websockets` library (asyncio).

Each connection is greeted with `hello` (protocol version, session id, configuration, limits).
A session is a numbered sequence of events: the app's own input (microphone, file, demo) is one
session; a client that sends audio gets a session of its own. Every event goes out with its
sequence number. Each client reads through its own bounded queue: when it falls behind, the
oldest events are dropped, counted and announced in a `dropped` message, and the engine and the
other clients never wait for it. A client that reconnects with `?session=ID&last_seq=N` gets the
events it missed replayed from the session's bounded log (a `replay` message says how many, and
how many the log no longer had). Clients may send audio: a JSON `start` (sample rate, format
`pcm16` or `float32`, channels), then binary frames, then `stop`; audio their backlog had to
drop is announced at once in `dropped_audio`. Malformed messages (hostile ones included: deep
nesting, huge numbers, long text; see app.feed_json) get a short `error` message and the
connection stays open.

The same port answers plain HTTP (app.feed_http): the browser page in app/web/, `/healthz`, the
session list and exports. With a token, a client presents it as `Authorization: Bearer`,
`?token=`, or (what a browser can do) the websocket subprotocol `bearer.<base64url token>` next
to `unispeech-live`. docs/feed.md and app/feed.schema.json document the protocol.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import numpy as np

from websockets.exceptions import ConnectionClosed

from app.bus import EventBus, Subscription
from app.feed_http import handle_http, page_files, response
from app.feed_json import ControlError, parse_control, short
from app.live import StreamRunner
from app.sources import AudioBlock
from app.writers import SessionRecord
from engine.timebase import SAMPLE_RATE

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_CLIENT_QUEUE = 500
DEFAULT_LOG_ITEMS = 5000
MAX_CLIENT_BACKLOG_S = 30.0  # client audio waiting for compute beyond this is dropped, counted
MAX_KEPT_SESSIONS = 64  # ended client sessions kept for reconnection
DEFAULT_MAX_CLIENTS = 100  # connections beyond this are closed with 1013 (try again later)
SUBPROTOCOL = "unispeech-live"  # offered by browsers, with `bearer.<base64url token>` beside it
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
CLOSE_TRY_AGAIN_LATER = 1013
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
    record: SessionRecord = field(default_factory=SessionRecord)

    def __post_init__(self) -> None:
        # final captions and turns as they stand, for exports (the same fold the CLI's files use)
        self.bus.tap(lambda item: self.record.add(item.event))

    def describe(self) -> dict[str, Any]:
        return {"session": self.session_id, "kind": self.kind, "ended": self.ended,
                "last_seq": self.bus.last_seq, **self.info}


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

    @property
    def closed(self) -> bool:
        """True after `stop` (or the connection's end): no more audio is taken."""
        return self._closed

    def push(self, samples: np.ndarray) -> int:
        """Queue 16 kHz samples; returns how many (oldest first) the backlog limit dropped now."""
        self.received_samples += len(samples)
        self._blocks.append(samples)
        self._held += len(samples)
        dropped_now = 0
        while self._held > MAX_CLIENT_BACKLOG_S * SAMPLE_RATE and len(self._blocks) > 1:
            dropped = self._blocks.popleft()
            self._held -= len(dropped)
            dropped_now += len(dropped)
        self.dropped_samples += dropped_now
        self._ready.set()
        return dropped_now

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
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.config = config
        self.pool = pool
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.client_queue = client_queue
        self.log_items = log_items
        self.max_clients = max_clients
        self.sessions: OrderedDict[str, FeedSession] = OrderedDict()
        self.main_session: FeedSession | None = None
        self.connections: set[_Connection] = set()
        self.errors_sent = 0
        self.refused_clients = 0
        self.page = page_files()
        self.started_at = time.monotonic()
        self.secure = False
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

    def describe_sessions(self) -> list[dict[str, Any]]:
        """The sessions a client can follow, the app's input first, then the newest first."""
        listed = sorted(self.sessions.values(), key=lambda x: x is not self.main_session)
        return [x.describe() for x in listed]

    def health(self) -> dict[str, Any]:
        """What `/healthz` reports: enough for a service manager, nothing a session said."""
        live = sum(1 for x in self.sessions.values() if not x.ended)
        return {"status": "ok", "protocol": PROTOCOL_VERSION, "uptime_s": round(time.monotonic() - self.started_at, 1),
                "clients": len(self.connections), "max_clients": self.max_clients,
                "sessions": len(self.sessions), "live_sessions": live, "accepts_audio": self.pool is not None}

    async def linger(self, grace_s: float, stop: asyncio.Event | None = None) -> None:
        """Keep serving (replay, exports) for `grace_s` seconds after the input ended, or until `stop`."""
        if grace_s <= 0:
            return
        waiter = asyncio.ensure_future((stop or asyncio.Event()).wait())
        try:
            await asyncio.wait_for(waiter, grace_s)
        except asyncio.TimeoutError:
            pass

    def _forget_old_sessions(self) -> None:
        ended = [s for s in self.sessions.values() if s.kind == "client" and s.ended]
        for s in ended[: max(0, len(ended) - MAX_KEPT_SESSIONS)]:
            del self.sessions[s.session_id]

    # --- serving ----------------------------------------------------------------------------

    @staticmethod
    def offered_tokens(request: Any) -> list[str]:
        """Tokens a request presents: Authorization header, `?token=`, `bearer.` subprotocol."""
        offered = []
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            offered.append(header[7:].strip())
        offered += parse_qs(urlsplit(request.path).query).get("token", [])[:1]
        for value in request.headers.get_all("Sec-WebSocket-Protocol"):
            for proto in value.split(","):
                proto = proto.strip()
                if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                    encoded = proto[len(TOKEN_SUBPROTOCOL_PREFIX):]
                    try:
                        offered.append(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8"))
                    except (binascii.Error, UnicodeDecodeError, ValueError):
                        offered.append("")  # malformed: counts as a wrong token
        return offered

    def authorised(self, request: Any) -> bool:
        """True when no token is set, or every token the request offers is right (at least one)."""
        if self.token is None:
            return True
        offered = self.offered_tokens(request)
        return bool(offered) and all(hmac.compare_digest(t.encode(), self.token.encode()) for t in offered)

    def _process_request(self, connection: Any, request: Any) -> Any:
        """Plain HTTP goes to app.feed_http; a websocket upgrade needs the token when one is set."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return handle_http(self, request, self.authorised(request))
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != request.headers.get("Host", "").lower():
            # a page from another site in the user's browser (browsers let any page open a
            # websocket anywhere): it must not read the captions or send audio
            return response(HTTPStatus.FORBIDDEN, f"cross-origin websocket refused (Origin {origin[:80]})\n")
        if not self.authorised(request):
            return response(
                HTTPStatus.UNAUTHORIZED,
                "a bearer token is required (Authorization header, ?token= or the bearer.<base64url> subprotocol)\n",
            )
        return None

    @staticmethod
    def _select_subprotocol(connection: Any, offered: Any) -> Any:
        """`unispeech-live` when offered (browsers, for the token beside it); clients need not."""
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl: Any = None) -> int:
        """Listen on host:port (port 0 picks a free one), TLS with an `ssl.SSLContext`; returns the port."""
        from websockets.asyncio.server import serve

        self.secure = ssl is not None
        self._server = await serve(
            self._handle, host, port, max_size=self.max_message_bytes,
            process_request=self._process_request, select_subprotocol=self._select_subprotocol,
            ping_interval=20, ping_timeout=20, ssl=ssl,
        )
        self.started_at = time.monotonic()
        return self._server.sockets[0].getsockname()[1]

    async def close(self, flush_timeout_s: float = 5.0) -> None:
        """Stop listening, close every connection (1001), and end the client streams still running.

        Their audio is closed so each stream flushes what it had (its events stay in the session's
        log); a stream still busy after `flush_timeout_s` is cancelled.
        """
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = [s.task for s in self.sessions.values() if s.task is not None and not s.task.done()]
        for session in self.sessions.values():
            if session.audio is not None:
                session.audio.close()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=flush_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=flush_timeout_s)

    async def _send(self, ws: Any, message: dict[str, Any]) -> None:
        await ws.send(json.dumps(message, separators=(",", ":")))

    async def _error(self, ws: Any, reason: str) -> None:
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
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
        if len(self.connections) >= self.max_clients:
            self.refused_clients += 1
            await ws.close(CLOSE_TRY_AGAIN_LATER, f"server full: at most {self.max_clients} clients (--max-clients)")
            return
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
        last_seq_text = query.get("last_seq", [None])[0]
        server = self.server
        session: FeedSession | None
        if wanted is not None and wanted not in server.sessions:
            await server._error(self.ws, f"unknown session {short(wanted)} (expired or never existed)")
            await self.ws.close(1008, "unknown session")
            return
        resuming = wanted is not None or last_seq_text is not None  # ?last_seq=N alone: the app's input
        session = server.sessions[wanted] if wanted is not None else server.main_session
        after_seq: int | None = None
        if resuming:
            text = last_seq_text if last_seq_text is not None else "0"
            if not (text.isdigit() and len(text) <= 18):
                await server._error(self.ws, f"last_seq must be a whole number >= 0, got {short(text)}")
                await self.ws.close(1008, "bad last_seq")
                return
            after_seq = int(text)
            newest = session.bus.last_seq if session is not None else 0
            if after_seq > newest:
                await server._error(self.ws, f"last_seq {after_seq} is beyond the session's newest event ({newest})")
                await self.ws.close(1008, "last_seq beyond the log")
                return
        session_id = session.session_id if session is not None else new_session_id()
        await server._send(self.ws, server._hello(session, session_id, resumed=resuming and session is not None))
        self.session_id = session_id
        if session is not None:
            await self._follow(session, after_seq)
        async for message in self.ws:
            try:
                await self._on_message(message)
            except ConnectionClosed:
                raise
            except Exception:  # a bug, not the client's fault: say so, log it, keep serving
                log.exception("feed: failed to handle a client message")
                await server._error(self.ws, "internal error while handling this message (logged on the server)")

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
        if isinstance(message, bytes):
            await self._on_audio(message)
            return
        server = self.server
        try:
            msg = parse_control(message)
        except ControlError as exc:
            await server._error(self.ws, str(exc))
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
            elif self.own.audio.closed:
                await server._error(self.ws, "`stop` again: this connection's audio has already stopped")
            else:
                self.own.audio.close()
        elif kind == "ping":
            await server._send(self.ws, {"type": "pong", "last_seq": self.following.bus.last_seq if self.following else 0})
        elif kind == "auth":
            await server._error(self.ws, "`auth` is not a message: send the token with the handshake "
                                         "(Authorization header, ?token= or the bearer.<base64url> subprotocol)")
        else:
            await server._error(self.ws, f"unknown message type {short(kind)} (expected start, stop or ping)")

    async def _on_audio(self, data: bytes) -> None:
        """A binary frame: decode, queue for compute, and say at once if the backlog dropped audio."""
        server = self.server
        audio = self.own.audio if self.own is not None else None
        if audio is None:
            await server._error(self.ws, "binary audio before a `start` message")
            return
        if audio.closed:
            await server._error(self.ws, f"audio after `stop`: {len(data)} bytes ignored")
            return
        if not data:
            await server._error(self.ws, "empty binary frame: send audio samples or `stop`")
            return
        try:
            dropped = audio.push(audio.decode(data))
        except ValueError as exc:
            await server._error(self.ws, str(exc))
            return
        if dropped:
            await server._send(self.ws, {
                "type": "dropped_audio", "session": self.own.session_id if self.own else "",
                "samples": dropped, "seconds": round(dropped / SAMPLE_RATE, 3),
                "total_samples": audio.dropped_samples, "max_backlog_s": MAX_CLIENT_BACKLOG_S,
            })

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
            await server._error(self.ws, f"`sample_rate` must be an integer in 8000..192000, got {short(rate)}")
            return
        if not isinstance(fmt, str) or fmt not in FORMATS:
            await server._error(self.ws, f"`format` must be one of {sorted(FORMATS)}, got {short(fmt)}")
            return
        if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 8:
            await server._error(self.ws, f"`channels` must be an integer in 1..8, got {short(channels)}")
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


def tls_context(cert_path: str, key_path: str) -> Any:
    """A server-side TLS context from PEM files (`--tls-cert`, `--tls-key`); AppError if unusable."""
    import ssl

    from app.errors import AppError

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise AppError(f"--tls-cert {cert_path} / --tls-key {key_path}: cannot load ({exc})") from None
    return context
