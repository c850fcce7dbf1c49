"""Several websocket audio clients at once against the real feed server: the batches the model side saw.

    python -m bench.ws_clients [--clients 4] [--seconds 20] [--block-ms 100] [--realtime]

Starts the app's server in process on 127.0.0.1 (port 0) with the embedded models (or
--asr-model/--diar-model/--sv-model), with no input of its own, as `run_live.py --serve` does;
then N clients connect, `start` pcm16 at 16 kHz, send the first --seconds of the bundled demo
conversation in --block-ms frames (as fast as the socket takes them, or paced in real time with
--realtime), `stop`, and read their events to `end`. Prints per client its events and caption
finals, and for the server's scheduler the forwards, the batch sizes (rows per forward) and the
windows that shared a forward with another stream's. With several clients some forwards must
carry more than one row; the command exits 1 when none did.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.timebase import SAMPLE_RATE  # noqa: E402


async def client(url: str, pcm: bytes, block_bytes: int, realtime: bool, started: asyncio.Barrier) -> dict:
    """One client's session: its event counts and the seconds from `stop` to `end`."""
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert hello["type"] == "hello" and hello["accepts_audio"], hello
        await ws.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "format": "pcm16"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert reply["type"] == "started", reply
        await asyncio.wait_for(started.wait(), 30)  # all clients talk at the same time

        async def send() -> float:
            t0 = time.perf_counter()
            for i in range(0, len(pcm), block_bytes):
                await ws.send(pcm[i : i + block_bytes])
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + (i + block_bytes) / 2 / SAMPLE_RATE - time.perf_counter()))
            await ws.send(json.dumps({"type": "stop"}))
            return time.perf_counter()

        sender = asyncio.create_task(send())
        kinds: collections.Counter[str] = collections.Counter()
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 600))
            kinds[msg["type"]] += 1
            if msg["type"] == "end":
                break
        stopped = await sender
        return {"events": dict(kinds), "stop_to_end_s": round(time.perf_counter() - stopped, 2)}


async def run(args: argparse.Namespace) -> int:
    import numpy as np

    from app.cli import parse_args
    from app.engine_setup import choose_models, find_demo, load_engine
    from app.session import InputChoice, LiveSession, SessionOptions
    from app.sources import load_audio

    model_args = [a for a in (("--asr-model", args.asr_model), ("--diar-model", args.diar_model),
                              ("--sv-model", args.sv_model)) if a[1]]
    cli = parse_args([x for pair in model_args for x in pair])
    engine = load_engine(cli, choose_models(cli))
    audio = load_audio(find_demo().conversation)[: int(args.seconds * SAMPLE_RATE)]
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    session = LiveSession(engine, InputChoice("none", "clients"), SessionOptions(serve=("127.0.0.1", 0)))
    await session.start()
    try:
        url = f"ws://127.0.0.1:{session.port}/"
        started = asyncio.Barrier(args.clients)
        block_bytes = int(args.block_ms * SAMPLE_RATE / 1000) * 2
        t0 = time.perf_counter()
        results = await asyncio.gather(*(client(url, pcm, block_bytes, args.realtime, started)
                                         for _ in range(args.clients)))
        wall = time.perf_counter() - t0
        stats = session.pool.scheduler.stats
    finally:
        await session.close()
    sizes = list(stats.batch_sizes)
    hist = dict(sorted(collections.Counter(sizes).items()))
    print(f"# {args.clients} clients x {len(audio) / SAMPLE_RATE:.1f} s of the demo conversation, "
          f"{args.block_ms} ms frames, {'real time' if args.realtime else 'as fast as the socket takes them'}; "
          f"wall {wall:.1f} s")
    for i, r in enumerate(results, 1):
        print(f"client {i}: {json.dumps(r['events'], sort_keys=True)}; stop -> end {r['stop_to_end_s']} s")
    print(f"model side: {stats.forwards} forwards, {stats.windows} requests, ticks {stats.ticks}; "
          f"windows sharing a forward with another stream's: {stats.shared_windows}")
    print(f"batch sizes (rows per forward, latest {len(sizes)}): {hist}; max {max(sizes) if sizes else 0}, "
          f"mean {sum(sizes) / max(1, len(sizes)):.2f}")
    if args.clients > 1 and (not sizes or max(sizes) <= 1):
        print("error: no forward carried more than one row", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0, help="audio each client sends (from the demo)")
    ap.add_argument("--block-ms", type=int, default=100)
    ap.add_argument("--realtime", action="store_true", help="pace each client at real time")
    ap.add_argument("--asr-model")
    ap.add_argument("--diar-model")
    ap.add_argument("--sv-model")
    args = ap.parse_args(argv)
    if args.clients < 1:
        ap.error(f"--clients must be at least 1, got {args.clients}")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
