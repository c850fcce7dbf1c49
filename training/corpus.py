"""Build and load the synthetic multi-speaker corpus (reproducible from a seed).

`python -m training.corpus --out /work/runs/corpus [--seed 1234] [--tiny]` synthesizes single
utterances for train/val/test speaker identities (disjoint), with disjoint sentences, plus the
everyday test sentences, test conversations (wav + RTTM + transcript JSON) and the training text
for the language model. Generation runs in parallel processes; results are merged in job order, so
the output does not depend on the number of workers.

Layout: `meta.json`, `speakers.json`, `lm_text.txt` (training sentences only), per split
`{split}.npy` (int16, utterances concatenated) and `{split}.jsonl` (one row per utterance:
id, speaker, text, offset, length), and `conversations/{name}.{wav,rttm,json}`. An optional
`extra/` folder holds supplementary training speech (`training.corpus_extra`), loaded as "extra".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from training.mixing import Mixture, augment, build_conversation, rttm_lines
from training.text import EVERYDAY_SENTENCES, dictionary_words, fortune_sentences, normalize_transcript
from training.voices import SAMPLE_RATE, SpeakerIdentity, make_identities, synthesize

CORPUS_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class CorpusSpec:
    """Sizes and seed of a corpus build."""

    seed: int = 1234
    train_espeak: int = 600
    train_flite: int = 140
    train_utts: int = 12
    val_espeak: int = 20
    val_flite: int = 6
    val_utts: int = 8
    test_espeak: int = 40
    test_flite: int = 12
    test_utts: int = 8
    everyday_repeats: int = 2  # each everyday sentence is spoken by this many test speakers
    word_list_fraction: float = 0.1  # train utterances made of random dictionary words
    val_sentence_fraction: float = 0.03
    test_sentence_fraction: float = 0.06
    conversations: int = 16
    conversation_s: tuple[float, float] = (30.0, 60.0)
    workers: int = 2

    @classmethod
    def tiny(cls, seed: int = 7) -> "CorpusSpec":
        """A seconds-to-build corpus for tests and smoke runs."""
        return cls(seed=seed, train_espeak=4, train_flite=1, train_utts=2, val_espeak=1, val_flite=1,
                   val_utts=2, test_espeak=2, test_flite=1, test_utts=4, everyday_repeats=0,
                   conversations=2, conversation_s=(6.0, 10.0), workers=1)


@dataclass(frozen=True, slots=True)
class UtteranceJob:
    """One utterance to synthesize."""

    split: str
    utt_id: str
    speaker: SpeakerIdentity
    text: str  # text given to the synthesizer
    transcript: str  # normalised CTC transcript (upper case, spaces)


def split_sentences(sentences: list[str], spec: CorpusSpec) -> dict[str, list[str]]:
    """Shuffle (seeded) and cut sentences into disjoint train/val/test lists."""
    order = list(sentences)
    random.Random(f"{spec.seed}-sentences").shuffle(order)
    n_val = int(len(order) * spec.val_sentence_fraction)
    n_test = int(len(order) * spec.test_sentence_fraction)
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}


def plan_jobs(spec: CorpusSpec, sentences: dict[str, list[str]], words: list[str]) -> list[UtteranceJob]:
    """Return every utterance job of the corpus, in a fixed order."""
    jobs: list[UtteranceJob] = []
    for split in SPLITS:
        n_esp, n_fl, per = {
            "train": (spec.train_espeak, spec.train_flite, spec.train_utts),
            "val": (spec.val_espeak, spec.val_flite, spec.val_utts),
            "test": (spec.test_espeak, spec.test_flite, spec.test_utts),
        }[split]
        speakers = make_identities(split, n_esp, n_fl, spec.seed)
        rng = random.Random(f"{spec.seed}-jobs-{split}")
        pool = list(sentences[split])
        rng.shuffle(pool)
        k = 0
        for spk in speakers:
            for _ in range(per):
                if split == "train" and rng.random() < spec.word_list_fraction:
                    text = " ".join(rng.sample(words, rng.randint(3, 7)))
                else:
                    text = pool[k % len(pool)]
                    k += 1
                jobs.append(UtteranceJob(split, f"{split}-{len(jobs):06d}", spk, text, normalize_transcript(text)))
        if split == "test":
            test_rng = random.Random(f"{spec.seed}-everyday")
            for sentence in EVERYDAY_SENTENCES:
                for spk in test_rng.sample(speakers, min(spec.everyday_repeats, len(speakers))):
                    jobs.append(UtteranceJob("everyday", f"everyday-{len(jobs):06d}", spk, sentence,
                                             normalize_transcript(sentence)))
    return jobs


def _synth_job(job: UtteranceJob) -> np.ndarray:
    return (synthesize(job.speaker, job.text) * 32767).astype(np.int16)


def synthesize_jobs(jobs: list[UtteranceJob], workers: int, progress: bool = False) -> list[np.ndarray]:
    """Synthesize all jobs (in `workers` processes), results in job order."""
    results: list[np.ndarray] = []
    t0 = time.monotonic()
    if workers <= 1:
        iterator = map(_synth_job, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(workers)
        iterator = pool.imap(_synth_job, jobs, chunksize=16)
    try:
        for i, audio in enumerate(iterator, 1):
            results.append(audio)
            if progress and (i % 500 == 0 or i == len(jobs)):
                print(f"[corpus] {i}/{len(jobs)} utterances, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return results


def _write_split(out: Path, name: str, jobs: list[UtteranceJob], audios: list[np.ndarray]) -> None:
    offset = 0
    rows = []
    for job, audio in zip(jobs, audios):
        rows.append({"id": job.utt_id, "speaker": job.speaker.name, "text": job.transcript,
                     "offset": offset, "length": int(len(audio))})
        offset += len(audio)
    data = np.concatenate(audios) if audios else np.zeros(0, np.int16)
    np.save(out / f"{name}.npy", data)
    (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_mixture(out_dir: Path, name: str, mixture: Mixture) -> None:
    """Write `name.wav` (16-bit), `name.rttm` and `name.json` (segments with transcripts)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sf.write(out_dir / f"{name}.wav", mixture.audio, SAMPLE_RATE, subtype="PCM_16")
    (out_dir / f"{name}.rttm").write_text("\n".join(rttm_lines(name, mixture.segments)) + "\n", encoding="utf-8")
    segs = [{"speaker": s.speaker, "start_sample": s.start, "end_sample": s.end, "text": s.text}
            for s in mixture.segments]
    (out_dir / f"{name}.json").write_text(json.dumps({"sample_rate": SAMPLE_RATE, "segments": segs}, indent=1),
                                          encoding="utf-8")


def make_test_conversations(corpus: "Corpus", spec: CorpusSpec) -> list[tuple[str, Mixture]]:
    """Build the test conversations (2-4 held-out speakers each) from test-split utterances."""
    return make_conversations(corpus, spec, "test", spec.conversations, seed_tag=77)


def make_conversations(corpus: "Corpus", spec: CorpusSpec, split: str, count: int,
                       seed_tag: int) -> list[tuple[str, Mixture]]:
    """`count` conversations of 2-4 speakers of `split` (validation ones tune the engine's
    clustering threshold; test ones are written with the corpus), seeded by (spec.seed, seed_tag)."""
    rng = np.random.default_rng([spec.seed, seed_tag])
    by_spk = corpus.by_speaker(split)
    names = sorted(by_spk)
    out = []
    for i in range(count):
        n_spk = min(int(rng.integers(2, 5)), len(names))
        chosen = [names[j] for j in rng.choice(len(names), n_spk, replace=False)]
        pools = {}
        for name in chosen:
            idx = list(by_spk[name])
            rng.shuffle(idx)
            pools[name] = [(corpus.audio(split, j), corpus.rows[split][j]["text"]) for j in idx]
        target = int(rng.uniform(*spec.conversation_s) * SAMPLE_RATE)
        mix = build_conversation(rng, pools, target, overlap_prob=0.3, gain_db=(-3.0, 0.0))
        out.append((f"conv{i:02d}", Mixture(augment(rng, mix.audio, strength=0.3), mix.segments)))
    return out


def build_conversations(corpus: "Corpus", split: str, count: int, seed_tag: int) -> list[tuple[str, Mixture]]:
    """`make_conversations` for a built corpus, with the seed and lengths it was built with."""
    meta = json.loads((corpus.root / "meta.json").read_text(encoding="utf-8"))
    spec = CorpusSpec(seed=int(meta["spec"]["seed"]), conversation_s=tuple(meta["spec"]["conversation_s"]))
    return make_conversations(corpus, spec, split, count, seed_tag=seed_tag)


def build(out: Path, spec: CorpusSpec, progress: bool = True) -> None:
    """Synthesize the whole corpus described by `spec` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    sentences = split_sentences(fortune_sentences(), spec)
    words = dictionary_words()
    jobs = plan_jobs(spec, sentences, words)
    audios = synthesize_jobs(jobs, spec.workers, progress)
    for name in (*SPLITS, "everyday"):
        idx = [i for i, j in enumerate(jobs) if j.split == name]
        _write_split(out, name, [jobs[i] for i in idx], [audios[i] for i in idx])
    speakers = {}
    for job in jobs:
        speakers.setdefault(job.speaker.name, {"split": "test" if job.split == "everyday" else job.split,
                                               **asdict(job.speaker)})
    (out / "speakers.json").write_text(json.dumps(speakers, indent=1), encoding="utf-8")
    (out / "lm_text.txt").write_text("".join(normalize_transcript(s) + "\n" for s in sentences["train"]),
                                     encoding="utf-8")
    write_conversations_and_meta(out, spec)


def write_conversations_and_meta(out: Path, spec: CorpusSpec) -> None:
    """(Re)write the test conversations and meta.json from the synthesized utterances in `out`."""
    corpus = Corpus(out)
    for name, mix in make_test_conversations(corpus, spec):
        write_mixture(out / "conversations", name, mix)
    meta = {"version": CORPUS_VERSION, "spec": asdict(spec), "fingerprint": corpus_fingerprint(out),
            "hours": {s: round(sum(r["length"] for r in corpus.rows[s]) / SAMPLE_RATE / 3600, 3)
                      for s in (*SPLITS, "everyday")}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def corpus_fingerprint(root: Path) -> str:
    """SHA-256 over the corpus files (audio, manifests, RTTM), for reproducibility checks; the
    supplementary speech in `extra/` (training.corpus_extra) is not part of it."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != "meta.json" and path.relative_to(root).parts[0] != "extra":
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class Corpus:
    """Read access to a built corpus (audio memory-mapped)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if not (self.root / "train.jsonl").is_file():
            raise FileNotFoundError(f"no corpus at {self.root} (build it with python -m training.corpus --out {self.root})")
        self.rows: dict[str, list[dict]] = {}
        self._audio: dict[str, np.ndarray] = {}
        for name in (*SPLITS, "everyday"):
            path = self.root / f"{name}.jsonl"
            if path.is_file():
                self.rows[name] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
                self._audio[name] = np.load(self.root / f"{name}.npy", mmap_mode="r")
        extra = self.root / "extra" / "train.jsonl"  # supplementary training speech (training.corpus_extra)
        if extra.is_file():
            self.rows["extra"] = [json.loads(line) for line in extra.read_text(encoding="utf-8").splitlines()]
            self._audio["extra"] = np.load(extra.with_suffix(".npy"), mmap_mode="r")

    def audio(self, split: str, index: int) -> np.ndarray:
        """Float32 samples of utterance `index` of `split`."""
        row = self.rows[split][index]
        return self._audio[split][row["offset"]:row["offset"] + row["length"]].astype(np.float32) / 32767.0

    def by_speaker(self, split: str) -> dict[str, list[int]]:
        """Utterance indices of `split` grouped by speaker (insertion order)."""
        out: dict[str, list[int]] = {}
        for i, row in enumerate(self.rows[split]):
            out.setdefault(row["speaker"], []).append(i)
        return out

    def speakers(self, split: str) -> list[str]:
        """Speaker names of `split`, sorted."""
        return sorted({r["speaker"] for r in self.rows[split]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=CorpusSpec().seed)
    parser.add_argument("--workers", type=int, default=CorpusSpec().workers)
    parser.add_argument("--tiny", action="store_true", help="seconds-sized corpus for smoke tests")
    args = parser.parse_args(argv)
    spec = CorpusSpec.tiny(args.seed) if args.tiny else CorpusSpec(seed=args.seed)
    spec = CorpusSpec(**{**asdict(spec), "workers": args.workers})
    t0 = time.monotonic()
    build(args.out, spec)
    meta = json.loads((args.out / "meta.json").read_text())
    print(f"[corpus] done in {time.monotonic() - t0:.0f} s: hours {meta['hours']}, fingerprint {meta['fingerprint'][:16]}")


if __name__ == "__main__":
    main()
