"""Speaker verification offline: EER of the x-vector head over target/impostor trials of held-out
speakers, scored two ways: 3-clip enrolment and cosine (`evaluate_sv`), and the app's own path,
`voiceprints.xvector.XVectorEmbedder` with `voiceprints.trials.score_trials` (`evaluate_sv_service`).
`write_trials` writes the trial folder that `python -m voiceprints.calibrate` calibrates on.

Part of `python -m training.evaluate`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.timebase import SAMPLE_RATE
from models import FeatureExtractor, UniSpeechSatForXVector
from training.corpus import Corpus
from training.scoring import equal_error_rate

MIN_TRIAL_SPEECH_S = 0.5  # the embedder refuses clips with less detected speech


def has_trial_speech(audio: np.ndarray) -> bool:
    """Whether `audio` has the detected speech the embedder needs (`MIN_TRIAL_SPEECH_S`)."""
    from engine.speech_detect import speech_mask, speech_only
    from engine.speech_model import default_detector

    return speech_only(audio, speech_mask(audio, default_detector())).size >= MIN_TRIAL_SPEECH_S * SAMPLE_RATE


@torch.no_grad()
def xvector_embeddings(model: UniSpeechSatForXVector, fe: FeatureExtractor, audios: list[np.ndarray]) -> np.ndarray:
    """(N, D) unit-length embeddings, one utterance at a time (no padding effects)."""
    out = []
    for a in audios:
        x, m = fe([a], sampling_rate=SAMPLE_RATE)
        e = model(x, m).embeddings[0].double().numpy()
        out.append(e / (np.linalg.norm(e) + 1e-12))
    return np.stack(out)


def verification_trials(corpus: Corpus, split: str, enroll_clips: int = 3) -> tuple[dict[str, list[int]], list[tuple[str, int]]]:
    """Per speaker: the first `enroll_clips` utterances enroll, the rest are test clips."""
    enroll, tests = {}, []
    for spk, idx in sorted(corpus.by_speaker(split).items()):
        enroll[spk] = idx[:enroll_clips]
        tests += [(spk, i) for i in idx[enroll_clips:]]
    return enroll, tests


def evaluate_sv(model_dir: Path, corpus: Corpus, split: str = "test") -> dict:
    """EER over all test clips x all enrolled held-out speakers (targets: same speaker)."""
    model = UniSpeechSatForXVector.from_pretrained(model_dir / "sv")
    fe = FeatureExtractor.from_pretrained(model_dir / "sv")
    enroll, tests = verification_trials(corpus, split)
    speakers = sorted(enroll)
    cache: dict[int, np.ndarray] = {}
    needed = sorted({i for v in enroll.values() for i in v} | {i for _, i in tests})
    emb = xvector_embeddings(model, fe, [corpus.audio(split, i) for i in needed])
    cache = dict(zip(needed, emb))
    prints = {}
    for spk in speakers:
        lengths = np.array([corpus.rows[split][i]["length"] for i in enroll[spk]], dtype=np.float64)
        v = sum(w * cache[i] for w, i in zip(lengths, enroll[spk]))
        prints[spk] = v / np.linalg.norm(v)
    target, impostor = [], []
    for spk, i in tests:
        for other in speakers:
            (target if other == spk else impostor).append(float(cache[i] @ prints[other]))
    eer, threshold = equal_error_rate(target, impostor)
    return {"speakers": len(speakers), "target_trials": len(target), "impostor_trials": len(impostor),
            "eer": eer, "eer_threshold": threshold, "enroll_clips": 3}


def write_trials(corpus: Corpus, split: str, out: Path) -> Path:
    """Write `split`'s utterances as `SPEAKER__CLIP.wav` files (voiceprints.trials' trial folder),
    leaving out clips with under 0.5 s of detected speech (the embedder refuses those)."""
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    for spk, idx in sorted(corpus.by_speaker(split).items()):
        for k, i in enumerate(idx):
            audio = corpus.audio(split, i)
            if not has_trial_speech(audio):
                continue
            sf.write(out / f"{spk}__{k:02d}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
    return out


def evaluate_sv_service(model_dir: Path, corpus: Corpus, split: str = "test") -> dict:
    """EER with the app's own verification path: `voiceprints.xvector.XVectorEmbedder` and
    `voiceprints.trials.score_trials` (enroll from >= 5 s of net speech, as VoiceprintService)."""
    from voiceprints.trials import score_trials
    from voiceprints.xvector import XVectorEmbedder

    embedder = XVectorEmbedder(model_dir / "sv")
    clips: dict[str, list[np.ndarray]] = {}
    dropped = 0
    for spk, idx in sorted(corpus.by_speaker(split).items()):
        for i in idx:
            audio = corpus.audio(split, i)
            # score_trials embeds the detected speech only; the embedder refuses < 0.5 s of it
            if has_trial_speech(audio):
                clips.setdefault(spk, []).append(audio)
            else:
                dropped += 1
    scores = score_trials(embedder, clips)
    eer, threshold = equal_error_rate(scores.target, scores.impostor)
    calibrated = getattr(embedder, "threshold", None)
    out = {"eer": eer, "eer_threshold": threshold, "target_trials": len(scores.target),
           "impostor_trials": len(scores.impostor), "shipped_threshold": calibrated,
           "clips_with_under_0.5s_speech_left_out": dropped}
    if calibrated is not None:
        tgt, imp = np.asarray(scores.target), np.asarray(scores.impostor)
        out.update(frr_at_shipped=float((tgt < calibrated).mean()), far_at_shipped=float((imp >= calibrated).mean()))
    return out

