"""Training speech closer to people (issue 22): festival voices and voice families across engines,
the supplementary speech step, voice variation and the room / microphone simulation."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from training.augment_voice import VoiceVariation, shift_pitch_tempo, vtlp  # noqa: E402
from training.corpus import Corpus, CorpusSpec, build, corpus_fingerprint  # noqa: E402
from training.rooms import (  # noqa: E402
    CODECS, PEAK_LIMIT, Acoustics, RoomSimulator, add_at_snr, band_limit, codec_round_trip, colored_noise,
    microphone_eq, reverberate, rms, room_impulse_responses, set_level,
)
from training.voices import (  # noqa: E402
    FESTIVAL_VOICES, festival_identities, held_out_families, recorded_family, synthesize,
)

SR = 16000


def _speechlike(seed: int = 0, seconds: float = 1.5) -> np.ndarray:
    """A voiced-speech stand-in: a 140 Hz harmonic series with a syllable-rate envelope, peak 0.5."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * 140 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 25))
    x = x * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _db(x: float) -> float:
    return 20 * np.log10(x)


def _centroid_hz(x: np.ndarray) -> float:
    mag = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(np.sum(freqs * mag) / np.sum(mag))


def _peak_hz(x: np.ndarray) -> float:
    return float(np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x)))))])


# ---------------------------------------------------------------------------------------- voices
def test_a_recorded_speaker_is_one_family_across_engines():
    assert recorded_family("fl-kal16-c+40-t100") == recorded_family("fl-kal-c-80-t95") == "rec-kal"
    assert recorded_family("fest-kal_diphone-c+0-t100") == "rec-kal"
    assert recorded_family("fl-slt-c+20-t110") == recorded_family("fest-cmu_us_slt_arctic_hts-c-40-t90") == "rec-slt"
    assert recorded_family("fest-ked_diphone-c+0-t100") == "rec-ked"
    assert recorded_family("esp-en-gb-m5-p40-s160") == "esp-m5"
    with pytest.raises(ValueError, match="festival voice"):
        recorded_family("fest-nobody-c+0-t100")


def test_no_test_family_enters_training_through_another_engine():
    # slt is heard only in test (through flite), m5 only in val: both are held out in every engine
    speakers = {"fl-slt-c+20-t100": "test", "fl-kal-c+0-t100": "train", "esp-en-us-m5-p40-s160": "val",
                "esp-en-us-m1-p40-s160": "train", "fl-kal16-c+20-t100": "test"}
    held = held_out_families(speakers)
    assert held == {"rec-slt", "esp-m5"}  # kal is in train too (through flite), so not held out
    identities = festival_identities(20, seed=3, exclude=held)
    assert len({i.name for i in identities}) == 20
    assert {recorded_family(i.name) for i in identities} == {"rec-kal", "rec-ked"}
    assert all(i.pitch % 40 == 0 for i in identities)  # the training lattice of pitch shifts
    with pytest.raises(ValueError, match="excluded family"):
        festival_identities(2, seed=3, exclude={"rec-kal", "rec-ked", "rec-slt"})


@pytest.mark.parametrize("voice", sorted(FESTIVAL_VOICES))
def test_festival_voices_speak(voice):
    if shutil.which("text2wave") is None:
        pytest.skip("festival is not installed (.ci/setup installs it)")
    identity = festival_identities(1, seed=0, exclude={f"rec-{f}" for v, f in FESTIVAL_VOICES.items() if v != voice})[0]
    audio = synthesize(identity, "ten of clubs")
    assert audio.dtype == np.float32 and 0.4 * SR < len(audio) < 3 * SR and len(audio) % 160 == 0
    assert abs(float(np.abs(audio).max()) - 0.5) < 1e-3
    # speech, not byte-swapped noise: most energy below 4 kHz
    spec = np.abs(np.fft.rfft(audio)) ** 2
    assert spec[np.fft.rfftfreq(len(audio), 1 / SR) < 4000].sum() > 0.8 * spec.sum()
    assert np.array_equal(audio, synthesize(identity, "ten of clubs"))


# ------------------------------------------------------------------------------- voice variation
def test_vtlp_keeps_length_and_moves_the_spectrum_with_alpha():
    x = _speechlike()
    assert np.array_equal(vtlp(x, 1.0), x)
    up, down = vtlp(x, 1.1), vtlp(x, 0.9)
    assert up.shape == down.shape == x.shape and up.dtype == np.float32
    assert np.isfinite(up).all() and np.isfinite(down).all()
    assert _centroid_hz(down) < _centroid_hz(x) < _centroid_hz(up)
    assert np.abs(vtlp(x, 1.00011) - x).max() < 5e-3  # a near-identity warp resynthesises the input


def test_pitch_and_tempo_move_independently():
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(SR) / SR)).astype(np.float32)
    higher = shift_pitch_tempo(tone, 1200, 1.0)  # one octave up, same length
    assert abs(len(higher) - len(tone)) < 0.02 * len(tone)
    assert abs(_peak_hz(higher[2000:-2000]) - 600) < 15
    faster = shift_pitch_tempo(tone, 0, 1.25)  # shorter, same pitch
    assert abs(len(faster) - len(tone) / 1.25) < 0.02 * len(tone)
    assert abs(_peak_hz(faster[2000:-2000]) - 300) < 15


def test_voice_variation_level_shape_and_seed():
    x = _speechlike(1)
    v = VoiceVariation(pitch_cents=300, tempo_range=0.12, warp_range=0.1)
    a = v.apply(np.random.default_rng(5), x)
    assert a.dtype == np.float32 and np.isfinite(a).all()
    assert 0.86 * len(x) < len(a) < 1.16 * len(x)  # tempo 1 +- 0.12
    assert abs(_db(rms(a)) - _db(rms(x))) < 0.1  # same RMS as the input
    assert np.array_equal(a, v.apply(np.random.default_rng(5), x))
    assert not np.array_equal(a, v.apply(np.random.default_rng(6), x))
    with pytest.raises(ValueError, match="warp_range"):
        VoiceVariation(warp_range=0.5)


# ------------------------------------------------------------------------- rooms and microphones
def test_rir_bank_is_seeded_unit_energy_and_starts_at_the_direct_path():
    pytest.importorskip("pyroomacoustics")
    bank = room_impulse_responses(3, seed=4)
    again = room_impulse_responses(3, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(bank, again))
    assert not np.array_equal(bank[0], room_impulse_responses(1, seed=5)[0])
    for rir in bank:
        assert rir.dtype == np.float32 and abs(float(np.sum(rir.astype(np.float64) ** 2)) - 1) < 1e-4
        assert int(np.argmax(np.abs(rir))) <= 8 and len(rir) > 0.05 * SR  # a tail, direct path first


def test_reverberation_keeps_length_and_level_and_spreads_energy():
    x = np.zeros(SR, np.float32)
    x[1000] = 0.5
    rir = (np.random.default_rng(0).standard_normal(4000) * np.exp(-np.arange(4000) / 600)).astype(np.float32)
    rir[0] = 3.0
    y = reverberate(x, rir)
    assert y.shape == x.shape and abs(rms(y) - rms(x)) < 1e-6
    assert np.sum(y[1100:5000] ** 2) > 0.1 * np.sum(y ** 2)  # energy after the direct sound


def test_noise_is_added_at_the_asked_snr():
    x = _speechlike(2)
    noise = colored_noise(np.random.default_rng(1), len(x))
    assert abs(float(np.std(noise)) - 1) < 1e-3
    y = add_at_snr(x, noise, 10.0)
    assert y.shape == x.shape and y.dtype == np.float32
    assert abs(_db(rms(x) / rms(y - x)) - 10.0) < 0.05


def test_microphone_eq_and_band_limit_keep_level_and_shape():
    x = _speechlike(3)
    rng = np.random.default_rng(2)
    for y in (microphone_eq(rng, x, 8.0), band_limit(rng, x)):
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        assert abs(rms(y) - rms(x)) < 1e-4
    tone = (0.3 * np.sin(2 * np.pi * 7500 * np.arange(SR) / SR)).astype(np.float32)
    mixed = tone + x[:SR]
    limited = band_limit(np.random.default_rng(0), mixed)  # low-pass at 3.4-7 kHz
    spec_in, spec_out = np.abs(np.fft.rfft(mixed)), np.abs(np.fft.rfft(limited))
    k = 7500 * SR // SR  # 1 s of audio: bin = Hz
    assert spec_out[k] < 0.3 * spec_in[k]


@pytest.mark.parametrize("codec", CODECS)
def test_codecs_round_trip_at_narrow_band(codec):
    x = _speechlike(4)
    y = codec_round_trip(x, codec)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert 0.7 < rms(y) / rms(x) < 1.3
    spec = np.abs(np.fft.rfft(y)) ** 2
    assert spec[np.fft.rfftfreq(len(y), 1 / SR) > 4100].sum() < 0.01 * spec.sum()  # 8 kHz sampling
    assert np.array_equal(y, codec_round_trip(x, codec))


def test_level_stays_in_range_without_clipping():
    x = _speechlike(5)
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = set_level(rng, x, (-40.0, -15.0))
        assert -40.01 <= _db(rms(y)) <= -14.99 and np.abs(y).max() <= PEAK_LIMIT


def test_room_simulator_all_on_level_shape_and_seed():
    pytest.importorskip("pyroomacoustics")
    x = _speechlike(6)
    on = Acoustics(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, rir_bank=4)
    source = lambda rng: _speechlike(int(rng.integers(100)), 1.0)  # noqa: E731
    sim = RoomSimulator(on, seed=1, babble_source=source)
    outs = [sim.apply(np.random.default_rng(s), x) for s in (0, 0, 1)]
    for y in outs:
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        assert np.abs(y).max() <= PEAK_LIMIT and -40.01 <= _db(rms(y)) <= -14.99
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    off = RoomSimulator(Acoustics(0, 0, 0, 0, 0, 0, 0), seed=1)
    assert not Acoustics(0, 0, 0, 0, 0, 0, 0).active and np.array_equal(off.apply(np.random.default_rng(0), x), x)
    with pytest.raises(ValueError, match="codec_prob"):
        Acoustics(codec_prob=1.5)


# ------------------------------------------------------------------------- supplementary speech
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    if shutil.which("text2wave") is None:
        pytest.skip("festival is not installed (.ci/setup installs it)")
    root = tmp_path_factory.mktemp("speech") / "c"
    build(root, dataclasses.replace(CorpusSpec.tiny(seed=13), workers=1), progress=False)
    return root


def test_extra_speech_is_training_only_resumable_and_leaves_the_corpus_alone(tiny_corpus):
    from training.corpus_extra import ExtraSpec, build_extra, held_out_transcripts

    before = corpus_fingerprint(tiny_corpus)
    spec = ExtraSpec(utterances=5, speakers=2, seed=1, chunk=2)
    out = build_extra(tiny_corpus, spec, progress=False)
    assert corpus_fingerprint(tiny_corpus) == before  # the frozen corpus' files are not part of it
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and not {r["text"] for r in rows} & held_out_transcripts(tiny_corpus)
    speakers = json.loads((tiny_corpus / "speakers.json").read_text())
    held = held_out_families({n: s["split"] for n, s in speakers.items()})
    assert all(r["speaker"].startswith("fest-") and recorded_family(r["speaker"]) not in held for r in rows)
    corpus = Corpus(tiny_corpus)
    assert len(corpus.rows["extra"]) == 5 and np.abs(corpus.audio("extra", 4)).max() > 0.1
    # resumable: a lost part is made again, kept parts are not touched, the result is the same
    audio = (out / "train.npy").read_bytes()
    kept = (out / "parts" / "part00000.npy").stat().st_mtime_ns
    (out / "parts" / "part00001.jsonl").unlink()
    build_extra(tiny_corpus, spec, progress=False)
    assert (out / "parts" / "part00000.npy").stat().st_mtime_ns == kept
    assert (out / "train.npy").read_bytes() == audio


def test_sampler_draws_extra_speech_and_varies_voices_reproducibly(tiny_corpus):
    from training.batches import BatchSampler
    from training.corpus_extra import ExtraSpec, build_extra

    build_extra(tiny_corpus, ExtraSpec(utterances=5, speakers=2, seed=1, chunk=2), progress=False)
    corpus = Corpus(tiny_corpus)
    extra_texts = {r["text"] for r in corpus.rows["extra"]}
    sampler = BatchSampler(corpus, 0, 8 * SR, 3, extra_prob=1.0)
    batch = sampler.utterances(3, mix_prob=0.0, strength=0.0)
    assert set(batch.texts) <= extra_texts and bool(batch.speed_changed.all())  # no speaker loss on them
    on = Acoustics(0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, rir_bank=2)

    def draw(seed: int):
        s = BatchSampler(corpus, seed, 8 * SR, 3, extra_prob=0.5, voice_prob=0.5, acoustics=on)
        return s.utterances(3, 0.15, 0.4), s.conversations(1, 2 * SR, 0.4)

    (u1, c1), (u2, c2) = draw(7), draw(7)
    assert np.array_equal(u1.input_values.numpy(), u2.input_values.numpy()) and u1.texts == u2.texts
    assert np.array_equal(c1.input_values.numpy(), c2.input_values.numpy())
    assert c1.input_values.shape == (1, 2 * SR) and float(np.abs(c1.input_values.numpy()).max()) <= 1.0
    # all probabilities 0 is the sampler without them: the same draws, batch for batch
    plain = BatchSampler(corpus, 3, 8 * SR, 3).utterances(2, 0.15, 0.4)
    zero = BatchSampler(corpus, 3, 8 * SR, 3, extra_prob=0.0, voice_prob=0.0,
                        acoustics=Acoustics(0, 0, 0, 0, 0, 0, 0)).utterances(2, 0.15, 0.4)
    assert np.array_equal(plain.input_values.numpy(), zero.input_values.numpy())


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_utterance_mixing_puts_the_other_voice_at_the_asked_level(snr_db):
    from training.mixing import mix_utterance

    rng = np.random.default_rng(0)
    main = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
    other = (0.5 * rng.standard_normal(2 * SR)).astype(np.float32)
    out = mix_utterance(np.random.default_rng(1), main, other, snr_db=(snr_db, snr_db))
    added = out - main
    piece = added[np.abs(added) > 0]
    assert out.shape == main.shape and 0.15 * len(main) <= len(piece) <= 0.5 * len(main) + 1
    assert 10 * np.log10(np.mean(main ** 2) / np.mean(piece ** 2)) == pytest.approx(snr_db, abs=0.05)


def test_sampler_mixes_at_the_configured_level(tiny_corpus):
    from training.batches import BatchSampler

    corpus = Corpus(tiny_corpus)

    def mixed(snr: tuple[float, float]):
        return BatchSampler(corpus, 5, 8 * SR, 3).utterances(3, 1.0, 0.0, mix_snr_db=snr)

    clean = BatchSampler(corpus, 5, 8 * SR, 3).utterances(3, 0.0, 0.0).input_values.numpy()
    loud, quiet = mixed((0.0, 0.0)), mixed((30.0, 30.0))
    assert np.array_equal(mixed((5.0, 15.0)).input_values.numpy(),
                          BatchSampler(corpus, 5, 8 * SR, 3).utterances(3, 1.0, 0.0).input_values.numpy())
    assert np.abs(loud.input_values.numpy() - clean).sum() > 5 * np.abs(quiet.input_values.numpy() - clean).sum() > 0
    # an equally loud second voice: the speaker loss leaves the utterance out; at run 7's levels it does not
    changed = (loud.input_values.numpy() != clean).any(axis=1)
    assert changed.any() and np.array_equal(loud.speed_changed.numpy(), changed)
    assert not quiet.speed_changed.any() and not mixed((5.0, 15.0)).speed_changed.any()
    sampler = BatchSampler(corpus, 5, 8 * SR, 3)
    with pytest.raises(ValueError, match="mixing level range is empty"):
        sampler.utterances(3, 1.0, 0.0, mix_snr_db=(5.0, 0.0))
    with pytest.raises(ValueError, match="pair_prob"):
        sampler.utterances(3, 0.0, 0.0, pair_prob=1.5)


def test_turn_pairs_join_two_speakers_texts_in_order(tiny_corpus):
    from training.batches import PAIR_PARTNER_S, BatchSampler, encode_transcript

    corpus = Corpus(tiny_corpus)
    rows = corpus.rows["train"]
    by_text = {r["text"]: r for r in rows}
    batch = BatchSampler(corpus, 4, 8 * SR, 3).utterances(3, 0.0, 0.0, pair_prob=1.0)
    assert bool(batch.speed_changed.all())  # two voices: no speaker loss on them
    for k, text in enumerate(batch.texts):
        parts = [t for t in by_text if text.startswith(t + " ") and text[len(t) + 1:] in by_text]
        assert parts, text  # two corpus utterances, whole, in order
        first, second = by_text[parts[0]], by_text[text[len(parts[0]) + 1:]]
        assert first["speaker"] != second["speaker"]
        assert min(first["length"], second["length"]) <= PAIR_PARTNER_S * SR
        n = int(batch.attention_mask[k].sum())
        assert 0.1 * SR <= n - first["length"] - second["length"] <= 1.0 * SR  # the pause between turns
        labels = batch.labels[k][batch.labels[k] >= 0].tolist()
        assert labels == encode_transcript(text)
    again = BatchSampler(corpus, 4, 8 * SR, 3).utterances(3, 0.0, 0.0, pair_prob=1.0)
    assert again.texts == batch.texts and np.array_equal(again.input_values.numpy(), batch.input_values.numpy())
    # partners are other speakers only: a speaker with no other speaker's short utterance stays unpaired
    lonely = BatchSampler(corpus, 4, 8 * SR, 3)
    only = rows[lonely.short[0]]["speaker"]
    lonely.short = [j for j in lonely.short if rows[j]["speaker"] == only]
    other = next(r["speaker"] for r in rows if r["speaker"] != only)
    one = np.zeros(SR, np.float32)
    assert lonely._turn_pair(one, "A", only) is None
    assert lonely._turn_pair(one, "A", other)[1] in {f"A {rows[j]['text']}" for j in lonely.short} | {f"{rows[j]['text']} A" for j in lonely.short}
    lonely.short = []
    with pytest.raises(ValueError, match="turn pairs need utterances"):
        lonely.utterances(3, 0.0, 0.0, pair_prob=0.5)
    # off, the sampler draws exactly as before the setting existed
    plain, off = (BatchSampler(corpus, 4, 8 * SR, 3).utterances(3, 0.15, 0.4, **kw) for kw in ({}, {"pair_prob": 0.0}))
    assert np.array_equal(plain.input_values.numpy(), off.input_values.numpy()) and plain.texts == off.texts


def test_a_training_step_runs_with_everything_on(tiny_corpus, tmp_path):
    from training.corpus_extra import ExtraSpec, build_extra
    from training.model import ArchConfig
    from training.train import Trainer, TrainConfig

    build_extra(tiny_corpus, ExtraSpec(utterances=5, speakers=2, seed=1, chunk=2), progress=False)
    cfg = dataclasses.replace(TrainConfig.smoke(), extra_prob=0.5, voice_prob=0.5, reverb_prob=0.5, noise_prob=0.5,
                              babble_prob=0.5, eq_prob=0.5, band_prob=0.5, codec_prob=0.5, level_prob=0.5, rir_bank=2,
                              mix_prob=0.5, mix_snr_min_db=0.0, pair_prob=1.0)
    trainer = Trainer(tmp_path, Corpus(tiny_corpus), ArchConfig.tiny(), cfg)
    losses = trainer.train_step()
    assert np.isfinite(losses["ctc"])
