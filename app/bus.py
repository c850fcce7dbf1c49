"""The event bus between the engine and its sinks: numbered events, one bounded queue per subscriber.

The engine's events are published once, on the event loop, each with the next sequence number
and its JSON wire form (encoded once, shared by every websocket client). Each subscriber (TUI,
websocket client, JSON-lines writer) reads its own bounded queue; when a subscriber falls behind,
its oldest items are dropped and counted, so a slow subscriber never stalls the engine or the
other subscribers. Cheap, lossless consumers (the file recorder) use `tap`, called inline.
A bounded log of recent items lets a reconnecting websocket client replay what it missed.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from engine.events import Event, event_to_dict

DEFAULT_QUEUE_ITEMS = 1000
DEFAULT_LOG_ITEMS = 5000


@dataclass(frozen=True, slots=True)
class Published:
    """One event as published: its sequence number (1, 2, ...), the event, and its JSON text."""

    seq: int
    event: Event | None
    wire: str
    payload: dict[str, Any]


class Subscription:
    """A subscriber's bounded queue: `put` never blocks; when full the oldest item is dropped."""

    def __init__(self, bus: "EventBus", max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self._bus = bus
        self._items: deque[Published] = deque()
        self._max_items = max_items
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0  # items dropped because this subscriber fell behind
        self.unreported_drops = 0  # drops not yet announced to the subscriber

    def put(self, item: Published) -> None:
        """Queue `item`, dropping the oldest queued item if the queue is full."""
        if len(self._items) >= self._max_items:
            self._items.popleft()
            self.dropped += 1
            self.unreported_drops += 1
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        """End the subscription: `get` returns None once the queue is drained."""
        self._closed = True
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        """How many items wait in the queue."""
        return len(self._items)

    def get_nowait(self) -> Published | None:
        """The oldest queued item, or None when the queue is empty."""
        if not self._items:
            return None
        return self._items.popleft()

    async def get(self) -> Published | None:
        """The oldest queued item, waiting for one; None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def unsubscribe(self) -> None:
        """Stop receiving items."""
        self._bus._remove(self)
        self.close()


class EventBus:
    """Numbers events, keeps a bounded replay log and fans items out to subscribers.

    Call `publish` from the event loop's thread only (the app's compute results arrive there).
    """

    def __init__(self, log_items: int = DEFAULT_LOG_ITEMS) -> None:
        self._subs: list[Subscription] = []
        self._taps: list[Callable[[Published], None]] = []
        self._log: deque[Published] = deque(maxlen=log_items)
        self.last_seq = 0
        self.closed = False

    def subscribe(self, max_items: int = DEFAULT_QUEUE_ITEMS) -> Subscription:
        """A new subscriber queue receiving every item published from now on."""
        sub = Subscription(self, max_items)
        if self.closed:
            sub.close()
        self._subs.append(sub)
        return sub

    def tap(self, callback: Callable[[Published], None]) -> None:
        """Call `callback` inline for every item: for cheap, lossless consumers only."""
        self._taps.append(callback)

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, event: Event) -> Published:
        """Number `event`, log it and hand it to every tap and subscriber."""
        payload = event_to_dict(event)
        return self.publish_payload(payload, event)

    def publish_payload(self, payload: dict[str, Any], event: Event | None = None) -> Published:
        """Publish a ready wire dict (e.g. an `end` notice); it gets the next sequence number."""
        self.last_seq += 1
        payload = {"seq": self.last_seq, **payload}
        item = Published(self.last_seq, event, json.dumps(payload, separators=(",", ":")), payload)
        self._log.append(item)
        for tap in self._taps:
            tap(item)
        for sub in self._subs:
            sub.put(item)
        return item

    def replay_after(self, seq: int) -> tuple[list[Published], int]:
        """Logged items with sequence number > `seq`, and how many of those the log no longer has."""
        items = [p for p in self._log if p.seq > seq]
        first_kept = items[0].seq if items else self.last_seq + 1
        return items, max(0, first_kept - seq - 1)

    def close(self) -> None:
        """No more items: every subscriber's `get` returns None once drained."""
        self.closed = True
        for sub in list(self._subs):
            sub.close()

    def __iter__(self) -> Iterator[Published]:
        return iter(list(self._log))
