"""Engine configuration: frozen, validated dataclasses with working defaults.

A `HeadSchedule` says how one head sees the stream: windows of `window_samples`, a new one every
`hop_samples`, each window's middle `hop_samples` taken ("committed") after `left_context_samples`
and before `right_context_samples`. All lengths are whole 20 ms frames, so every window starts on
the shared frame grid. Defaults and the measurements behind them are in docs/engine.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.timebase import FRAME_SAMPLES, SAMPLE_RATE

MIN_XVECTOR_SAMPLES = SAMPLE_RATE // 2  # 0.5 s: the least audio a speaker x-vector is taken of


def _check_frames(name: str, value: int, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int number of samples, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value % FRAME_SAMPLES:
        raise ValueError(
            f"{name}={value} is not a whole number of {FRAME_SAMPLES}-sample frames "
            f"(nearest: {round(value / FRAME_SAMPLES) * FRAME_SAMPLES})"
        )


@dataclass(frozen=True, slots=True)
class HeadSchedule:
    """Window geometry for one head (or one shared encoder pass), in samples.

    Window k covers samples [k*hop, k*hop + window); it commits frames
    [k*hop + left, (k+1)*hop + left) (window 0 also commits from frame 0), so every frame is
    taken exactly once, with `left` context before it and at least `right` after it.
    """

    left_context_samples: int
    hop_samples: int
    right_context_samples: int

    def __post_init__(self) -> None:
        _check_frames("left_context_samples", self.left_context_samples)
        _check_frames("hop_samples", self.hop_samples, minimum=FRAME_SAMPLES)
        _check_frames("right_context_samples", self.right_context_samples, minimum=FRAME_SAMPLES)

    @property
    def window_samples(self) -> int:
        """Samples per window: left context + hop + right context."""
        return self.left_context_samples + self.hop_samples + self.right_context_samples

    @property
    def hop_frames(self) -> int:
        return self.hop_samples // FRAME_SAMPLES

    @property
    def left_frames(self) -> int:
        return self.left_context_samples // FRAME_SAMPLES

    @property
    def right_frames(self) -> int:
        return self.right_context_samples // FRAME_SAMPLES

    @property
    def window_frames(self) -> int:
        """Frames the encoder yields for a full window (the conv stack drops the last one)."""
        return frames_in(self.window_samples)

    @property
    def algorithmic_latency_samples(self) -> int:
        """Worst-case wait from a sample's arrival until its frame is committed (no compute)."""
        return self.hop_samples + self.right_context_samples

    @classmethod
    def from_seconds(cls, left_s: float, hop_s: float, right_s: float) -> "HeadSchedule":
        """Build from seconds (configuration edge only), rounded to whole frames."""

        def frames(s: float) -> int:
            return int(round(s * SAMPLE_RATE / FRAME_SAMPLES)) * FRAME_SAMPLES

        return cls(frames(left_s), frames(hop_s), frames(right_s))


def frames_in(n_samples: int) -> int:
    """Encoder frames for `n_samples` input samples (conv stack: 400-sample field, 320 hop)."""
    if n_samples < 400:
        return 0
    return (n_samples - 400) // FRAME_SAMPLES + 1


@dataclass(frozen=True, slots=True)
class SpeakerConfig:
    """Thresholds for speaker activity, turns and identity (see docs/engine.md for why)."""

    onset: float = 0.6  # aggregated activity above this turns a speaker on
    offset: float = 0.4  # ... and below this turns it off again (hysteresis)
    min_on_frames: int = 10  # 0.2 s: shorter bursts are dropped
    min_off_frames: int = 10  # 0.2 s: shorter gaps are bridged
    embed_min_samples: int = 2 * SAMPLE_RATE  # 2 s of single-speaker speech before a first x-vector
    embed_max_samples: int = 8 * SAMPLE_RATE  # x-vectors use at most the last 8 s of a run
    embed_growth: float = 3.0  # re-embed when clean speech tripled, within the 8 s kept (1.5 s hop: once, at 3 s)
    # cosine below this to every cluster: a new `unknown-N` (None: the calibrated verification
    # threshold of the x-vector model, i.e. "would not verify as the same person")
    new_cluster_threshold: float | None = None
    # two unknown clusters at least this close are merged (None: verification threshold + 0.05)
    merge_threshold: float | None = None
    centroid_momentum: float = 0.8  # weight of the old centroid on update
    cluster_audio_samples: int = 30 * SAMPLE_RATE  # audio kept per cluster for later enrollment
    # speaker change inside a run: every this much new clean speech is embedded on its own ...
    change_check_samples: int = SAMPLE_RATE  # 1 s
    # ... and a cosine to the run's x-vector below this splits the run (None: the value measured
    # for the x-vector model, `clustering.change_threshold` in its verification.json, else never;
    # -1: never)
    change_threshold: float | None = None
    # who speaks when: "spans" (x-vectors of short spans of detected speech, clustered online;
    # needs a speech detector and the x-vector head) or "activity" (the frame-activity head's
    # channels, named by run x-vectors; the only choice without them). The span values below were
    # chosen on ami-dev and synthetic validation conversations together (training/tune_speakers.py,
    # models/embedded/speaker_tuning.json); docs/engine.md has the figures.
    tracking: str = "spans"
    span_frames: int = 75  # 1.5 s of audio per span x-vector
    span_hop_frames: int = 25  # a new span every 0.5 s
    span_min_speech: float = 0.3  # share of detected speech a span needs to be embedded at all
    new_speaker_min_speech: float = 0.5  # ... and to open a new `unknown-N`
    new_speaker_spans: int = 2  # spans in a row that must agree on a voice nobody has before it opens (1 or 2)
    span_threshold: float = 0.35  # cosine to a cluster's centroid to join it (else a new voice)
    span_merge_threshold: float = 0.5  # two unknown clusters this close merge (unless heard together)

    def __post_init__(self) -> None:
        if self.tracking not in ("spans", "activity"):
            raise ValueError(f"tracking must be 'spans' or 'activity', got {self.tracking!r}")
        if self.span_frames < 25 or not 1 <= self.span_hop_frames <= self.span_frames:
            raise ValueError(f"need span_frames >= 25 and 1 <= span_hop_frames <= span_frames, got "
                             f"{self.span_frames}, {self.span_hop_frames}")
        if self.new_speaker_spans not in (1, 2):
            raise ValueError(f"new_speaker_spans must be 1 or 2, got {self.new_speaker_spans}")
        for name in ("span_min_speech", "new_speaker_min_speech"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.offset <= self.onset < 1.0:
            raise ValueError(f"need 0 < offset <= onset < 1, got offset={self.offset} onset={self.onset}")
        for name in ("min_on_frames", "min_off_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_min_samples < MIN_XVECTOR_SAMPLES or self.embed_max_samples < self.embed_min_samples:
            raise ValueError(
                f"need {MIN_XVECTOR_SAMPLES} <= embed_min_samples <= embed_max_samples, got "
                f"{self.embed_min_samples}, {self.embed_max_samples}"
            )
        if self.embed_growth <= 1.0:
            raise ValueError(f"embed_growth must be > 1, got {self.embed_growth}")
        if self.change_check_samples < MIN_XVECTOR_SAMPLES:
            raise ValueError(f"change_check_samples must be >= {MIN_XVECTOR_SAMPLES}, got {self.change_check_samples}")
        for name in ("new_cluster_threshold", "merge_threshold", "centroid_momentum", "change_threshold",
                     "span_threshold", "span_merge_threshold"):
            v = getattr(self, name)
            if v is not None and not -1.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [-1, 1], got {v}")


@dataclass(frozen=True, slots=True)
class SpeechConfig:
    """How the speech detector's per-frame probabilities are used.

    A frame is speech when its probability reaches `threshold`; `pad_frames` more frames on each
    side of speech are kept too (word edges, short pauses). Captions are decoded only from speech
    (`gate_captions`): elsewhere the CTC output is replaced by blank, so room noise and digital
    silence give no words. The detector itself is chosen where the models load (`--vad`).
    """

    threshold: float = 0.5
    pad_frames: int = 10  # 0.2 s
    gate_captions: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"speech threshold must lie in (0, 1), got {self.threshold}")
        if self.pad_frames < 0:
            raise ValueError(f"pad_frames must be >= 0, got {self.pad_frames}")


@dataclass(frozen=True, slots=True)
class DegradeConfig:
    """When to degrade: queued (not yet computed) audio per stream, in samples, per level.

    Level 1 skips every other speaker-activity window and all partial captions; level 2 also stops
    re-embedding speaker runs; level 3 drops the oldest queued caption windows' audio (counted in
    `Stats.dropped_samples`) so lag cannot grow without bound. `enabled=False` never degrades.
    """

    enabled: bool = True
    level_samples: tuple[int, int, int] = (2 * SAMPLE_RATE, 4 * SAMPLE_RATE, 8 * SAMPLE_RATE)
    recover_fraction: float = 0.5  # step down once lag falls below this fraction of the level

    def __post_init__(self) -> None:
        a, b, c = self.level_samples
        if not 0 < a < b < c:
            raise ValueError(f"level_samples must be increasing positive, got {self.level_samples}")
        if not 0.0 < self.recover_fraction < 1.0:
            raise ValueError(f"recover_fraction must be in (0, 1), got {self.recover_fraction}")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine needs besides the models. Defaults: see docs/engine.md."""

    ctc: HeadSchedule = field(default_factory=lambda: HeadSchedule.from_seconds(1.0, 0.8, 0.4))
    diar: HeadSchedule = field(default_factory=lambda: HeadSchedule.from_seconds(1.0, 1.5, 1.0))
    speakers: SpeakerConfig = field(default_factory=SpeakerConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    partials: bool = True  # emit CaptionPartial for the uncommitted tail after each window
    stats_every_windows: int = 10  # a Stats event every this many caption windows (0: never)
    max_batch: int = 16  # windows per forward in the scheduler
    max_queued_windows: int = 32  # per stream and head; beyond this the oldest are dropped
    lm_lookback_frames: int = 500  # frames the language-model re-decoder may revise (10 s)
    lm_beam_width: int = 512  # beam of the LM decoder built from an ARPA path (docs/lm.md)
    lm_log_add: bool = True  # that decoder sums merging hypotheses instead of keeping the best (docs/lm.md)
    # partial captions beam-decoded with the LM at this beam (0: greedy), while less audio than
    # partial_lm_max_lag_samples waits (else greedy), over at most partial_lm_max_frames (docs/lm.md)
    partial_lm_beam: int = 32
    partial_lm_max_lag_samples: int = SAMPLE_RATE
    partial_lm_max_frames: int = 100
    caption_gap_frames: int = 20  # 0.4 s between words starts a new caption
    word_gap_frames: int = 15  # 0.3 s of silence ends a word even without a word delimiter
    revise_horizon_frames: int = 3000  # captions stay revisable for 60 s after they settle

    def __post_init__(self) -> None:
        if not isinstance(self.ctc, HeadSchedule) or not isinstance(self.diar, HeadSchedule):
            raise TypeError("ctc and diar must be HeadSchedule values")
        if self.stats_every_windows < 0:
            raise ValueError(f"stats_every_windows must be >= 0, got {self.stats_every_windows}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_queued_windows < 2:
            raise ValueError(f"max_queued_windows must be >= 2, got {self.max_queued_windows}")
        if self.caption_gap_frames < 1:
            raise ValueError(f"caption_gap_frames must be >= 1, got {self.caption_gap_frames}")
        if self.word_gap_frames < 1:
            raise ValueError(f"word_gap_frames must be >= 1, got {self.word_gap_frames}")
        if self.revise_horizon_frames < 50:
            raise ValueError(f"revise_horizon_frames must be >= 50, got {self.revise_horizon_frames}")
        if self.lm_beam_width < 1:
            raise ValueError(f"lm_beam_width must be >= 1, got {self.lm_beam_width}")
        if self.lm_lookback_frames < 100:
            raise ValueError(f"lm_lookback_frames must be >= 100, got {self.lm_lookback_frames}")
        if self.partial_lm_beam < 0 or self.partial_lm_max_lag_samples < 0 or self.partial_lm_max_frames < 1:
            raise ValueError(f"need partial_lm_beam >= 0, partial_lm_max_lag_samples >= 0 and partial_lm_max_frames >= 1, "
                             f"got {self.partial_lm_beam}, {self.partial_lm_max_lag_samples}, {self.partial_lm_max_frames}")
