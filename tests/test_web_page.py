"""The feed page in a real headless Chromium (Debian's chromium + chromium-driver, via selenium).

Two kinds of server: the real command line (`run_live.py --serve`, the embedded model) for the
bundled demo and the microphone path, and an in-process `FeedServer` on its own thread, fed
scripted events, for what needs exact control (revisions, a cut connection, tokens, streams).
Every wait is on a condition in the page, with a timeout. Without Chromium these tests skip,
unless UNISPEECH_REQUIRE_BROWSER is set (`.ci/run` sets it), when they fail. The two through the
real model are marked slow (about a minute together on 2 cores); `.ci/run` runs them too.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.bus import EventBus
from app.compute import ComputePool
from app.server import FeedServer
from engine.events import CaptionFinal, CaptionPartial, CaptionRevision, Event, SpeakerMatch, SpeakerTurn, Word
from tests.test_app_fakes import FakeEngine, tone
from tools.browser import DEMO_WAV, ServedApp, available, chromium, fake_microphone_flags, wait_for

missing = available()
if missing:
    if os.environ.get("UNISPEECH_REQUIRE_BROWSER"):
        raise RuntimeError(f"browser tests required: {missing}")
    pytest.skip(missing, allow_module_level=True)

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


class ThreadServer:
    """A FeedServer (scripted engine) on its own event loop thread; the test publishes into it."""

    def __init__(self, token: str | None = None, client_queue: int = 500) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy_port: int | None = None
        self._proxied: list[asyncio.Transport] = []
        self.proxy_blocked = False
        self.call(self._start(token, client_queue))

    def call(self, coro: Any, timeout_s: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def _start(self, token: str | None, client_queue: int) -> None:
        self.server = FeedServer({"models": "fake"}, ComputePool(FakeEngine()), token=token,
                                 client_queue=client_queue)
        self.bus = EventBus()
        self.server.add_input_session("main", self.bus)
        self.port = await self.server.start("127.0.0.1", 0)

    def publish(self, *events: Event) -> None:
        async def go() -> None:
            for event in events:
                self.bus.publish(event)

        self.call(go())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port or self.port}/"

    # a TCP proxy in front of the server whose connections the test can cut, like a network drop
    def start_proxy(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.transport.abort()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.proxy_blocked:
                writer.transport.abort()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
            self._proxied += [writer.transport, up_writer.transport]
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def go() -> None:
            proxy = await asyncio.start_server(accept, "127.0.0.1", 0)
            self.proxy_port = proxy.sockets[0].getsockname()[1]

        self.call(go())

    def cut(self, block: bool) -> None:
        """Abort every proxied connection (no close frame) and refuse or allow new ones."""
        async def go() -> None:
            self.proxy_blocked = block
            for transport in self._proxied:
                transport.abort()
            self._proxied.clear()

        self.call(go())

    def close(self) -> None:
        self.call(self.server.close())
        self.server.pool.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def fake_server() -> Iterator[ThreadServer]:
    served = ThreadServer()
    yield served
    served.close()


def final(cid: int, text: str, speaker: str | None = "unknown-1", start: int = 0) -> CaptionFinal:
    words = tuple(Word(w, start + i * 10, start + i * 10 + 10, speaker) for i, w in enumerate(text.split()))
    return CaptionFinal(cid, text, words, start, start + 10 * len(words), speaker)


def page_captions(driver: Any) -> dict[int, tuple[str, str, int]]:
    rows = driver.execute_script("""return [...document.querySelectorAll('#captions .caption')].map(
        c => [+c.dataset.captionId, c.dataset.speaker, c.querySelector('.text').textContent,
              +(c.dataset.revisions || 0)]);""")
    assert len(rows) == len({r[0] for r in rows}), "a caption appears twice"
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def fold(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Final captions as they stand after every revision (what the page must show)."""
    caps: dict[int, dict[str, Any]] = {}
    for m in events:
        if m["type"] == "caption_final":
            caps[m["caption_id"]] = {"text": m["text"], "speaker": m["speaker"], "first_text": m["text"]}
        elif m["type"] == "caption_revision" and m["caption_id"] in caps:
            if "text" in m["changed"] and m["text"] is not None:
                caps[m["caption_id"]]["text"] = m["text"]
            if "speaker" in m["changed"]:
                caps[m["caption_id"]]["speaker"] = m["speaker"]
    return caps


def not_blank(png: bytes) -> tuple[int, float]:
    """(distinct colours, grey-level spread) of a screenshot."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    pixels = np.asarray(image)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    return colours, float(pixels.mean(axis=2).std())


# --- the bundled demo through the real command line -----------------------------------------


@pytest.mark.slow  # loads the embedded model; .ci/run runs it
def test_demo_renders_captions_lanes_revisions_and_exports(browser: Any, tmp_path: Path) -> None:
    events_path = tmp_path / "events.jsonl"
    files = {kind: tmp_path / f"cli.{kind}" for kind in ("srt", "vtt", "rttm", "transcript")}
    app = ServedApp(["--input", DEMO_WAV, "--speed", "8", "--headless", "--replay-grace", "120",
                     "--jsonl", str(events_path), *[a for k, p in files.items() for a in (f"--{k}", str(p))]])
    try:
        browser.get(app.url)
        wait_for(browser, "window.feedState.ended", 120, "the demo's end on the page")
        events = [json.loads(line) for line in events_path.read_text().splitlines()]
        assert events[-1]["type"] == "end"
        state = browser.execute_script("return window.feedState;")
        assert state["applied"] == len(events) and state["duplicates"] == 0 and state["gaps"] == 0

        # captions: every final caption once, as the revisions left it, in the same element
        expected = fold(events)
        shown = page_captions(browser)
        assert set(shown) == set(expected)
        for cid, cap in expected.items():
            assert shown[cid][:2] == (cap["speaker"] or "", cap["text"]), cid
        revised = [cid for cid, cap in expected.items() if cap["text"] != cap["first_text"]]
        assert revised and all(shown[cid][2] >= 1 for cid in revised)

        # lanes: one per speaker, one bar per turn, overlapping turns marked
        turns = [m for m in events if m["type"] == "speaker_turn"]
        lanes = browser.execute_script("""return [...document.querySelectorAll('#lanes .lane')].map(
            l => [l.dataset.speaker, l.querySelectorAll('.turn').length, l.querySelectorAll('.turn.overlap').length]);""")
        assert sorted(lanes) == sorted(
            [s, sum(t["speaker"] == s for t in turns), sum(t["speaker"] == s and t["overlap"] for t in turns)]
            for s in {t["speaker"] for t in turns})
        assert len(lanes) >= 2  # (whether the demo's turns overlap is up to the engine; see below)
        colours = browser.execute_script(
            "return [...document.querySelectorAll('#speakers .swatch')].map(s => s.style.background);")
        assert len(colours) == len(set(colours)) >= 2
        assert "real-time factor" in browser.find_element(By.ID, "stats").text

        # exports, fetched by the page from the server's log during the grace period
        exported = {kind: browser.execute_async_script(
            "const done = arguments[1]; fetch(`/api/sessions/${window.feedState.session}/export.${arguments[0]}`)"
            ".then(r => r.text()).then(done);", kind) for kind in files}

        shot = tmp_path / "page.png"
        browser.save_screenshot(str(shot))
        colours_in_shot, spread = not_blank(shot.read_bytes())
        assert colours_in_shot > 50 and spread > 5, (colours_in_shot, spread)
    finally:
        code = app.stop()
    assert code == 143, "".join(app.stderr_lines[-20:])  # SIGTERM ended the grace period
    assert "Traceback" not in "".join(app.stderr_lines)
    # the same writers as the command line's files (RTTM names the file differently)
    for kind in ("srt", "vtt", "transcript"):
        assert exported[kind] == files[kind].read_text() and exported[kind].strip(), kind
    strip_id = lambda text: [line.split()[:1] + line.split()[2:] for line in text.splitlines()]  # noqa: E731
    assert strip_id(exported["rttm"]) == strip_id(files["rttm"].read_text())


# --- scripted events: revisions in place, names, partials, scrolling, streams ----------------


def test_revision_in_place_names_partials_autoscroll_and_stream_choice(browser: Any, fake_server: ThreadServer) -> None:
    browser.get(fake_server.url)
    wait_for(browser, "window.feedState.connection === 'live'", 20)
    fake_server.publish(final(1, "hello world"), CaptionPartial("and the", 20, 30, "unknown-1"))
    element = wait_for(browser, "document.querySelector('[data-caption-id=\"1\"]')")
    partial = wait_for(browser, "document.getElementById('partial').textContent.includes('and the') && "
                                "document.getElementById('partial')")
    assert partial.value_of_css_property("font-style") == "italic"
    fake_server.publish(CaptionRevision(1, ("text", "speaker", "words"), "hello there",
                                        final(1, "hello there", "Alice").words, "Alice"),
                        SpeakerMatch("unknown-1", "Alice", 0.83, 0.51, True, (("Alice", 0.83),)))
    wait_for(browser, "window.feedState.lastSeq === 4")
    try:  # the very element shown before the revision now holds the revised caption
        assert "hello there" in element.text and "Alice" in element.text
    except StaleElementReferenceException:
        pytest.fail("the revision replaced the caption's element instead of changing it")
    assert len(page_captions(browser)) == 1
    verified = browser.find_element(By.CSS_SELECTOR, '#speakers li[data-speaker="Alice"] .verified')
    assert "Alice 0.83" in verified.text

    # overlapping speech: two lanes whose bars cover the same stretch of time, marked as overlap
    fake_server.publish(SpeakerTurn(1, "Alice", 0, 150), SpeakerTurn(2, "unknown-1", 100, 250, overlap=True))
    wait_for(browser, "document.querySelectorAll('#lanes .turn').length === 2")
    bars = browser.execute_script("""return [...document.querySelectorAll('#lanes .lane')].map(l => {
        const r = l.querySelector('.turn').getBoundingClientRect();
        return [l.dataset.speaker, r.left, r.right, l.querySelector('.turn').classList.contains('overlap')]; });""")
    assert [b[0] for b in bars] == ["Alice", "unknown-1"] and [b[3] for b in bars] == [False, True]
    assert bars[1][1] < bars[0][2]  # the second speaker starts before the first one stops

    # auto-scroll: on, the newest caption is in view; paused, the view stays where it is
    fake_server.publish(*[final(i, f"line {i}", start=100 * i) for i in range(2, 80)])
    wait_for(browser, "document.querySelectorAll('#captions .caption').length === 79")
    box = "document.getElementById('transcript')"
    wait_for(browser, f"{box}.scrollTop > 0 && {box}.scrollTop + {box}.clientHeight >= {box}.scrollHeight - 2")
    browser.find_element(By.ID, "autoscroll").click()
    browser.execute_script(f"{box}.scrollTop = 0;")
    fake_server.publish(*[final(i, f"line {i}", start=100 * i) for i in range(80, 90)])
    wait_for(browser, "document.querySelectorAll('#captions .caption').length === 89")
    assert browser.execute_script(f"return {box}.scrollTop;") == 0

    # a second stream (a client sending audio) appears in the chooser; following it shows its captions
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{fake_server.port}/") as ws:
        json.loads(ws.recv(5))
        ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "float32"}))
        client_session = json.loads(ws.recv(5))["session"]
        ws.send(tone(2.0).astype("<f4").tobytes())
        ws.send(json.dumps({"type": "stop"}))
        while json.loads(ws.recv(5))["type"] != "end":
            pass
    wait_for(browser, f"[...document.querySelectorAll('#stream option')].some(o => o.value === '{client_session}')",
             10, "the client's stream in the chooser")
    Select(browser.find_element(By.ID, "stream")).select_by_value(client_session)
    wait_for(browser, "window.feedState.ended")
    assert [c[1] for c in page_captions(browser).values()] == ["word0a word0b", "word1a word1b"]


def test_reconnect_mid_stream_loses_and_duplicates_nothing(browser: Any, fake_server: ThreadServer) -> None:
    fake_server.start_proxy()
    browser.get(fake_server.url)
    wait_for(browser, "window.feedState.connection === 'live'", 20)
    fake_server.publish(*[final(i, f"before {i}", start=10 * i) for i in range(1, 51)])
    wait_for(browser, "window.feedState.lastSeq === 50")
    fake_server.cut(block=True)  # the network drops; the page cannot get back in for now
    wait_for(browser, "window.feedState.connection === 'reconnecting'")
    fake_server.publish(*[final(i, f"while away {i}", start=10 * i) for i in range(51, 101)])
    fake_server.cut(block=False)
    wait_for(browser, "window.feedState.lastSeq === 100", 30, "the replay after reconnecting")
    fake_server.publish(*[final(i, f"after {i}", start=10 * i) for i in range(101, 151)])
    wait_for(browser, "window.feedState.lastSeq === 150")
    state = browser.execute_script("return window.feedState;")
    assert state["reconnects"] >= 1 and state["duplicates"] == 0 and state["gaps"] == 0
    assert state["applied"] == 150
    assert any(r["after_seq"] == 50 and r["count"] == 50 and r["lost"] == 0 for r in state["replays"])
    shown = page_captions(browser)
    assert sorted(shown) == list(range(1, 151))
    assert shown[75][1] == "while away 75"
    notices = browser.find_element(By.ID, "notices").text
    assert "connection lost" in notices


def test_a_page_that_falls_behind_fetches_the_dropped_events_again(browser: Any) -> None:
    served = ThreadServer(client_queue=5)  # the page's queue on the server holds 5 events
    try:
        browser.get(served.url)
        wait_for(browser, "window.feedState.connection === 'live'", 20)
        served.publish(*[final(i, f"burst {i}", start=10 * i) for i in range(1, 201)])  # at once
        wait_for(browser, "window.feedState.lastSeq === 200", 20)
        state = browser.execute_script("return window.feedState;")
        assert state["recoveries"] >= 1, "no resume after a `dropped` notice (or the burst never overflowed)"
        assert state["applied"] == 200 and state["gaps"] == 0 and state["duplicates"] == 0
        assert sorted(page_captions(browser)) == list(range(1, 201))
        assert "fetching them again" in browser.find_element(By.ID, "notices").text
    finally:
        served.close()


def test_token_is_asked_for_refused_when_wrong_and_never_in_a_url(browser: Any) -> None:
    served = ThreadServer(token="correct horse")
    try:
        browser.get(served.url)
        wait_for(browser, "!document.getElementById('token-form').hidden", 20, "the token form")
        assert browser.execute_script("return window.feedState.connection;") == "refused"
        field = browser.find_element(By.ID, "token")
        field.send_keys("wrong horse")
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_for(browser, "document.getElementById('token-label').textContent.includes('refused')", 10)
        assert browser.find_element(By.ID, "conn-state").text == "token refused"
        assert browser.execute_script("return window.feedState.applied;") == 0
        field.send_keys("correct horse")
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_for(browser, "window.feedState.connection === 'live'", 10)
        served.publish(final(1, "for your ears only"))
        wait_for(browser, "document.getElementById('captions').textContent.includes('for your ears only')")
        urls = browser.execute_script(
            "return [location.href, ...performance.getEntries().map(e => e.name)];")
        assert urls and not any("horse" in u for u in urls), urls
        # a websocket with the wrong token is refused by the server, not only by the page's check
        refused = browser.execute_async_script("""
            const done = arguments[0];
            const b64 = btoa('wrong horse').replace(/=+$/, '');
            const ws = new WebSocket(`ws://${location.host}/`, ['unispeech-live', 'bearer.' + b64]);
            ws.onopen = () => done('opened'); ws.onclose = (e) => done('closed ' + e.code);""")
        assert refused == "closed 1006"
    finally:
        served.close()


# --- the microphone button through the real model -------------------------------------------


@pytest.mark.slow  # loads the embedded model and plays the demo in real time; .ci/run runs it
def test_microphone_sends_the_demo_and_gets_its_words_back(tmp_path: Path) -> None:
    reference = json.loads((ROOT / "app" / "demo" / "conversation.json").read_text())
    vocabulary = {w for seg in reference["segments"] for w in seg["text"].split()}
    app = ServedApp(["--headless"])
    try:
        with chromium(fake_microphone_flags(DEMO_WAV)) as driver:
            driver.get(app.url)
            wait_for(driver, "window.feedState.connection === 'live'", 30)
            driver.find_element(By.ID, "mic").click()
            wait_for(driver, "window.feedState.connection === 'live' && window.feedState.session", 30,
                     "the microphone's own session")
            words = wait_for(driver, """(() => {
                const w = [...document.querySelectorAll('#captions .text')].flatMap(t => t.textContent.split(/\\s+/)).filter(Boolean);
                return w.length >= 8 && w; })()""", 90, "eight words back from the microphone")
            driver.find_element(By.ID, "mic").click()  # stop: the stream is flushed and ends
            wait_for(driver, "window.feedState.ended", 30)
            state = driver.execute_script("return window.feedState;")
            assert state["duplicates"] == 0 and state["gaps"] == 0
        known = sum(w in vocabulary for w in words)
        assert known >= 0.5 * len(words), words  # the demo's words, not noise
    finally:
        app.stop()
    assert "Traceback" not in "".join(app.stderr_lines)
