"""The app over the real engine and models/ on tiny random checkpoints (written here, no download).

A headless run (in process: the subprocess path is covered in test_cli_bad_input); the speaker subcommands in process (enroll, verify,
identify, list, remove, their JSON, unknown names, too little speech); a hub id while offline;
and the websocket feed serving audio from two clients at once through the engine's scheduler.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import main
from tests.test_cli import synth
from tests.tiny_checkpoints import write_own_tiny_checkpoint

pytestmark = pytest.mark.timeout(120)



@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    out = {head: write_own_tiny_checkpoint(root / head, head, seed, **({"num_labels": 3} if head == "frame" else {}))
           for seed, head in enumerate(("ctc", "frame", "xvector"))}
    speech = {}
    for name, text, engine in (
        ("ann1", "The quick brown fox jumps over the lazy dog near the river bank today.", "espeak-ng"),
        ("ann2", "She sells sea shells by the sea shore every single summer morning.", "espeak-ng"),
        ("bob1", "Thanks, I will share my screen with everyone in a moment.", "flite"),
    ):
        speech[name] = synth(root, name, text, engine)
    out.update({name: root / f"{name}.wav" for name in speech})
    return out


def models_args(tiny: dict[str, Path]) -> list[str]:
    return ["--asr-model", str(tiny["ctc"]), "--diar-model", str(tiny["frame"]), "--sv-model", str(tiny["xvector"])]


def test_headless_run_over_the_real_engine(tiny: dict[str, Path], tmp_path: Path) -> None:
    rttm, transcript, jsonl = tmp_path / "m.rttm", tmp_path / "m.txt", tmp_path / "m.jsonl"
    code = main(["--input", str(tiny["bob1"]), "--fast", "--headless", "--rttm", str(rttm),
                 "--transcript", str(transcript), "--jsonl", str(jsonl),
                 "--speakers-db", str(tmp_path / "s.db"), *models_args(tiny)])
    assert code == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    kinds = {r["type"] for r in records}
    assert {"caption_partial", "speaker_activity", "speaker_turn", "stats"} <= kinds
    assert records[-1]["type"] == "end"
    assert all(line.startswith("SPEAKER bob1 1 ") for line in rttm.read_text().splitlines())
    finals = [r["text"] for r in records if r["type"] == "caption_final" and r["text"].strip()]
    assert transcript.read_text().split() == " ".join(finals).split()


def test_speaker_subcommands(tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--speakers-db", str(tmp_path / "speakers.db"), "--sv-model", str(tiny["xvector"])]

    def run(*argv: str) -> tuple[int, dict, str]:
        code = main([*argv, *(db[:2] if argv[0] == "speakers" else db)])  # speakers takes no --sv-model
        out = capsys.readouterr()
        last = json.loads(out.out.strip().splitlines()[-1]) if out.out.strip() else {}
        return code, last, out.err

    code, enrolled, err = run("enroll", "ann", "--input", str(tiny["ann1"]), str(tiny["ann2"]))
    assert code == 0, err
    assert enrolled["name"] == "ann" and enrolled["n_recordings"] == 2 and enrolled["net_speech_s"] >= 5
    # the tiny random x-vector head cannot tell voices apart: --same-voice-ok
    code, bob, err = run("enroll", "bob", "--input", str(tiny["bob1"]), str(tiny["bob1"]), "--same-voice-ok")
    assert code == 0, err
    code, verdict, _ = run("verify", "ann", "--input", str(tiny["bob1"]))
    assert code == 0  # whatever the decision
    assert set(verdict) == {"name", "score", "threshold", "accepted"}
    assert isinstance(verdict["score"], float) and isinstance(verdict["accepted"], bool)
    assert verdict["accepted"] == (verdict["score"] >= verdict["threshold"])
    # the printed score is the service's own float, not rounded
    from voiceprints.store import SpeakerStore
    from voiceprints.service import VoiceprintService
    from voiceprints.xvector import XVectorEmbedder
    from app.sources import load_audio

    service = VoiceprintService(XVectorEmbedder(tiny["xvector"]), SpeakerStore(tmp_path / "speakers.db"))
    assert verdict["score"] == service.verify("ann", load_audio(tiny["bob1"])).score
    code, ident, _ = run("identify", "--input", str(tiny["ann1"]))
    assert code == 0 and sorted(c["name"] for c in ident["candidates"]) == ["ann", "bob"]
    scores = [c["score"] for c in ident["candidates"]]
    assert scores == sorted(scores, reverse=True)
    code, listed, _ = run("speakers", "list")
    assert code == 0 and sorted(p["name"] for p in listed["speakers"]) == ["ann", "bob"]
    code, removed, _ = run("speakers", "remove", "bob")
    assert code == 0 and removed == {"removed": "bob"}
    code, _, err = run("verify", "bob", "--input", str(tiny["bob1"]))
    assert code == 2 and err.startswith("error: ") and "bob" in err and err.count("\n") == 1
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000 * 6, np.float32), 16000)
    code, _, err = run("enroll", "cy", "--input", str(silence))
    assert code == 2 and "speech" in err and err.count("\n") == 1


def test_hub_id_while_offline(tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    code = main(["--input", str(tiny["bob1"]), "--headless", "--asr-model", "nobody/no-such-model",
                 "--diar-model", "none", "--sv-model", "none", "--speakers-db", str(tmp_path / "s.db")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "nobody/no-such-model" in err[0]
    code = main(["enroll", "ann", "--input", str(tiny["ann1"]), "--sv-model", "nobody/no-such-model",
                 "--speakers-db", str(tmp_path / "s.db")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nobody/no-such-model" in err[0]


async def test_feed_batches_audio_from_two_clients(tiny: dict[str, Path], tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    from app.engine_setup import ModelChoice, load_engine
    from app.cli import parse_args
    from app.session import InputChoice, LiveSession, SessionOptions

    args = parse_args(models_args(tiny))
    engine = load_engine(args, ModelChoice(str(tiny["ctc"]), str(tiny["frame"]), str(tiny["xvector"])))
    session = LiveSession(engine, InputChoice("none", "clients"), SessionOptions(serve=("127.0.0.1", 0)))
    await session.start()
    try:
        url = f"ws://127.0.0.1:{session.port}/"
        audio, rate = sf.read(tiny["ann1"], dtype="float32")
        pcm = (audio * 32767).astype("<i2").tobytes()

        both_started = asyncio.Barrier(2)

        async def client() -> list[dict]:
            async with connect(url) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert hello["type"] == "hello" and hello["accepts_audio"]
                await ws.send(json.dumps({"type": "start", "sample_rate": rate, "format": "pcm16"}))
                started = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert started["type"] == "started"
                await asyncio.wait_for(both_started.wait(), 10)  # talk at the same time
                step = rate // 10 * 2  # 100 ms of pcm16
                for i in range(0, len(pcm), step):
                    await ws.send(pcm[i : i + step])
                await ws.send(json.dumps({"type": "stop"}))
                got = [started]
                while got[-1]["type"] != "end":
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                return got

        a, b = await asyncio.gather(client(), client())
        for got in (a, b):
            events = [m for m in got if "seq" in m]
            assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
            assert {"caption_partial", "speaker_turn", "stats"} <= {m["type"] for m in events}
        # the same audio gives the same captions on both streams
        finals = [[m["text"] for m in got if m["type"] == "caption_final"] for got in (a, b)]
        assert finals[0] == finals[1]
        # and the two clients' windows went through shared forwards
        stats = session.pool.scheduler.stats
        assert max(stats.batch_sizes) > 1 and session.pool.batched_windows > 0, stats
        assert stats.forwards < stats.windows, stats
    finally:
        await session.close()


async def test_pool_batches_due_windows_of_several_streams(tiny: dict[str, Path]) -> None:
    from app.cli import parse_args
    from app.compute import ComputePool
    from app.engine_setup import ModelChoice, load_engine
    from app.sources import load_audio

    engine = load_engine(parse_args([]), ModelChoice(str(tiny["ctc"]), str(tiny["frame"]), None))
    pool = ComputePool(engine)
    try:
        streams = [await pool.open_stream() for _ in range(3)]
        audio = load_audio(tiny["ann1"])
        alone = await pool.submit(streams[0], audio)  # one stream: nothing to batch with
        assert pool.batched_windows == 0
        together = await asyncio.gather(*(pool.submit(s, audio) for s in streams[1:]))
        assert pool.batched_windows > 0 and max(pool.scheduler.stats.batch_sizes) > 1
        assert pool.scheduler.stats.forwards < pool.scheduler.stats.windows
        # batching changes nothing in what a stream says (equal-length windows, no padding)
        from engine.events import Stats

        said = [[e for e in events if not isinstance(e, Stats)] for events in (alone, *together)]
        assert said[1] == said[2] and said[1]
        assert [type(e) for e in said[0]] == [type(e) for e in said[1]]
    finally:
        pool.shutdown()
