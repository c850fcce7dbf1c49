"""Supplementary training speech from festival voices, written beside a built corpus.

`python -m training.corpus_extra --corpus /work/runs/corpus [--utterances 900] [--speakers 24]`
synthesizes training sentences only (the corpus' own train split of the fortune sentences, never a
val, test or everyday transcript) with festival identities whose recorded family may be heard in
training (not in `training.voices.held_out_families`). The corpus' own files are not touched: everything
goes to `CORPUS/extra/` (`train.npy`, `train.jsonl`, `speakers.json`, `meta.json`), which
`training.corpus.Corpus` loads as the split "extra" and the batch sampler draws from with
`TrainConfig.extra_prob`. Resumable: finished chunks are kept in `extra/parts/` and skipped on a
rerun; the output does not depend on where a run stopped.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.corpus import CorpusSpec, UtteranceJob, _synth_job, split_sentences
from training.text import fortune_sentences, normalize_transcript
from training.voices import SAMPLE_RATE, festival_identities, held_out_families, recorded_family

EXTRA_DIR = "extra"
EXTRA_VERSION = 1


@dataclass(frozen=True, slots=True)
class ExtraSpec:
    """Size and seed of the supplementary speech."""

    utterances: int = 900
    speakers: int = 24
    seed: int = 22
    chunk: int = 50  # utterances per resumable part

    def __post_init__(self) -> None:
        if self.utterances < 1 or self.speakers < 1 or self.chunk < 1:
            raise ValueError(f"utterances, speakers and chunk must be positive: {self}")


def held_out_transcripts(corpus_dir: Path) -> set[str]:
    """Every transcript of the corpus' val, test and everyday splits."""
    out: set[str] = set()
    for name in ("val", "test", "everyday"):
        path = corpus_dir / f"{name}.jsonl"
        if path.is_file():
            out |= {json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()}
    return out


def plan_extra(corpus_dir: Path, spec: ExtraSpec, sentences: list[str] | None = None) -> list[UtteranceJob]:
    """The supplementary utterances, in a fixed order: festival identities of allowed families,
    each saying training sentences of the corpus (seeded by `spec.seed` and the corpus seed)."""
    meta = json.loads((corpus_dir / "meta.json").read_text(encoding="utf-8"))
    corpus_spec = CorpusSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["spec"].items()})
    speakers = json.loads((corpus_dir / "speakers.json").read_text(encoding="utf-8"))
    held_families = held_out_families({name: info["split"] for name, info in speakers.items()})
    identities = festival_identities(spec.speakers, spec.seed, held_families)
    if sentences is None:
        sentences = split_sentences(fortune_sentences(), corpus_spec)["train"]
    held = held_out_transcripts(corpus_dir)
    pool = [s for s in sentences if normalize_transcript(s) not in held]
    if not pool:
        raise ValueError("no training sentence is left once val, test and everyday transcripts are removed")
    random.Random(f"{spec.seed}-{corpus_spec.seed}-extra").shuffle(pool)
    return [UtteranceJob("extra", f"extra-{k:06d}", identities[k % len(identities)], pool[k % len(pool)],
                         normalize_transcript(pool[k % len(pool)])) for k in range(spec.utterances)]


def build_extra(corpus_dir: Path, spec: ExtraSpec, sentences: list[str] | None = None,
                progress: bool = True) -> Path:
    """Synthesize (or finish) the supplementary speech of `corpus_dir`; return its folder."""
    out = corpus_dir / EXTRA_DIR
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    jobs = plan_extra(corpus_dir, spec, sentences)
    t0 = time.monotonic()
    n_parts = (len(jobs) + spec.chunk - 1) // spec.chunk
    for p in range(n_parts):
        chunk = jobs[p * spec.chunk:(p + 1) * spec.chunk]
        stem = parts / f"part{p:05d}"
        expected = [j.utt_id for j in chunk]
        if stem.with_suffix(".jsonl").is_file():
            done = [json.loads(line)["id"] for line in stem.with_suffix(".jsonl").read_text().splitlines()]
            if done == expected:
                continue
        audios = [_synth_job(j) for j in chunk]
        rows, offset = [], 0
        for job, audio in zip(chunk, audios):
            rows.append({"id": job.utt_id, "speaker": job.speaker.name, "text": job.transcript,
                         "offset": offset, "length": int(len(audio))})
            offset += len(audio)
        np.save(stem.with_suffix(".tmp.npy"), np.concatenate(audios))
        stem.with_suffix(".tmp.npy").replace(stem.with_suffix(".npy"))
        stem.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        if progress:
            print(f"[extra] {min(len(jobs), (p + 1) * spec.chunk)}/{len(jobs)} utterances, "
                  f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    _merge(out, jobs, n_parts, spec)
    return out


def _merge(out: Path, jobs: list[UtteranceJob], n_parts: int, spec: ExtraSpec) -> None:
    rows, audios, offset = [], [], 0
    for p in range(n_parts):
        stem = out / "parts" / f"part{p:05d}"
        audio = np.load(stem.with_suffix(".npy"))
        for line in stem.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows.append({**row, "offset": offset + row["offset"]})
        offset += len(audio)
        audios.append(audio)
    np.save(out / "train.npy", np.concatenate(audios))
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    speakers = {j.speaker.name: {"split": "extra", "family": recorded_family(j.speaker.name), **asdict(j.speaker)}
                for j in jobs}
    (out / "speakers.json").write_text(json.dumps(speakers, indent=1), encoding="utf-8")
    hours = round(offset / SAMPLE_RATE / 3600, 3)
    (out / "meta.json").write_text(json.dumps({"version": EXTRA_VERSION, "spec": asdict(spec), "hours": hours},
                                              indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a built corpus (training.corpus)")
    parser.add_argument("--utterances", type=int, default=ExtraSpec().utterances)
    parser.add_argument("--speakers", type=int, default=ExtraSpec().speakers)
    parser.add_argument("--seed", type=int, default=ExtraSpec().seed)
    args = parser.parse_args(argv)
    spec = ExtraSpec(utterances=args.utterances, speakers=args.speakers, seed=args.seed)
    t0 = time.monotonic()
    out = build_extra(args.corpus, spec)
    meta = json.loads((out / "meta.json").read_text())
    print(f"[extra] done in {time.monotonic() - t0:.0f} s: {meta['hours']} h in {out}")


if __name__ == "__main__":
    main()
