"""CTC beam search with a word n-gram language model, on flashlight-text's C++ decoders.

`CTCBeamDecoder` turns (frames, vocab) CTC scores into words with 20 ms frame times. With an ARPA
model (plain or `.gz`, read by flashlight's KenLM wrapper) it runs flashlight's lexicon decoder:
words are spelled from the model's unigrams (plus any extra `lexicon` words, which the LM scores as
`<unk>`), the LM is applied at word ends with weight `alpha` and a per-word bonus `beta`. Without a
model it runs the lexicon-free beam search (open vocabulary, no LM). Any CTC vocabulary works: a
letter that the vocabulary only has in the other case is mapped, so a lower-case LM serves the
upper-case LibriSpeech vocabulary of microsoft/unispeech-sat-base-100h-libri-ft too.

Why flashlight-text: it installs as a wheel beside numpy 2 and torch 2.x (pyctcdecode pins
numpy<2) and its C++ beam search is fast enough to re-decode a streaming look-back many times a
second. Its lexicon-free decoder only takes a token-level LM, so a word LM needs the lexicon one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from flashlight.lib.text.decoder import (
    LM,
    CriterionType,
    LexiconDecoder,
    LexiconDecoderOptions,
    LexiconFreeDecoder,
    LexiconFreeDecoderOptions,
    SmearingMode,
    Trie,
    ZeroLM,
)
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from models.ctc_vocab import WordSpan
from models.lm.arpa import SPECIAL, UNK, read_arpa_vocabulary

LN10 = math.log(10.0)
LM_FILE_NAMES = ("lm.arpa.gz", "lm.arpa", "language_model/lm.arpa.gz", "language_model/lm.arpa")
LM_WEIGHTS_NAME = "lm_weights.json"  # beside the ARPA file: {"alpha": .., "beta": .., ...}
DEFAULT_ALPHA, DEFAULT_BETA = 0.5, 1.0
DEFAULT_BEAM_WIDTH = 512  # measured on the embedded model in streaming: docs/lm.md


def _weights_file(lm: str | Path) -> tuple[Path, object] | None:
    """`lm_weights.json` beside the LM and its parsed content, or None when there is none."""
    path = Path(lm).parent / LM_WEIGHTS_NAME
    if not path.is_file():
        return None
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: expected a JSON object with numbers 'alpha' and 'beta' ({exc})") from None


def read_lm_weights(lm: str | Path) -> tuple[float, float] | None:
    """(alpha, beta) tuned for the acoustic model this LM ships with: `lm_weights.json` in the
    LM's folder (written by `python -m models.lm.tune`), or None when there is none."""
    found = _weights_file(lm)
    if found is None:
        return None
    path, data = found
    try:
        alpha, beta = float(data["alpha"]), float(data["beta"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: expected a JSON object with numbers 'alpha' and 'beta' ({exc})") from None
    if not (math.isfinite(alpha) and math.isfinite(beta)) or alpha < 0:
        raise ValueError(f"{path}: alpha must be finite and >= 0 and beta finite, got {alpha}, {beta}")
    return alpha, beta


def _log_softmax(arr: np.ndarray) -> np.ndarray:
    top = arr.max(axis=1, keepdims=True)
    return arr - (top + np.log(np.exp(arr - top).sum(axis=1, keepdims=True)))


def read_blank_penalty(lm: str | Path) -> float | None:
    """The blank penalty tuned with the LM's weights (`blank_penalty` in `lm_weights.json`), or
    None when there is no such file or key (weights tuned before session 12)."""
    found = _weights_file(lm)
    if found is None:
        return None
    path, data = found
    try:
        value = data.get("blank_penalty")
        return None if value is None else _finite_penalty(float(value))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: 'blank_penalty' must be a finite number ({exc})") from None


def _finite_penalty(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"blank_penalty must be finite, got {value}")
    return float(value)


def find_language_model(model_dir: str | Path) -> Path | None:
    """The ARPA model shipped beside a CTC checkpoint (`lm.arpa[.gz]`, or under
    `language_model/` as transformers' Wav2Vec2ProcessorWithLM keeps it), or None."""
    for name in LM_FILE_NAMES:
        path = Path(model_dir) / name
        if path.is_file():
            return path
    return None


@contextlib.contextmanager
def _quiet_stderr(enabled: bool):
    """Silence C++ progress bars written straight to fd 2 (KenLM's loader) while loading."""
    if not enabled:
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _ContextLM(LM):
    """A KenLM whose start state has already read some words: lets a streaming re-decode of a
    window keep the words committed before it as LM history."""

    def __init__(self, kenlm: KenLM, context_ids: Sequence[int]):
        LM.__init__(self)
        self._kenlm = kenlm
        self._context_ids = list(context_ids)

    def start(self, start_with_nothing: bool):
        state = self._kenlm.start(start_with_nothing)
        for idx in self._context_ids:
            state, _ = self._kenlm.score(state, idx)
        return state

    def score(self, state, token_index: int):
        return self._kenlm.score(state, token_index)

    def finish(self, state):
        return self._kenlm.finish(state)


def _is_symbol(token: str) -> bool:
    """Tokens like `<s>`, `<unk>`: never part of a word's spelling."""
    return len(token) > 1 and token.startswith("<") and token.endswith(">")


class CTCBeamDecoder:
    """Beam search over CTC scores with an optional word n-gram LM.

    tokens: the CTC vocabulary in id order; blank_id: the CTC blank; delimiter: the word
    separator token. lm: an ARPA file (`.arpa` or `.arpa.gz`) or None. alpha: LM weight on
    natural-log LM scores; beta: score added per word (both as in pyctcdecode; None: the tuned
    values in `lm_weights.json` beside the LM if there is one, else 0.5 and 1.0). lexicon: extra
    words the decoder may spell (LM-scored as `<unk>`); with lm=None they make a closed vocabulary.
    unk_score: score of a word outside the lexicon (-inf: never, the default). beam_width: kept
    hypotheses; beam_size_token: best tokens tried per frame (None: all); beam_threshold: prune
    hypotheses this far (natural log) below the best. The defaults are (512, 10, 15): with the
    embedded model, streaming test CER fell from 14.1 % at beam 128 to 13.8 % at 512 and no
    further at 1024; more tokens per frame or a looser threshold changed nothing; beam 512 costs
    about 2.6x beam 128's CPU, some 6 % of one core per stream (docs/lm.md).
    pause_frames: a run of at least this many silent frames (best token blank or delimiter; 25 =
    0.5 s) ends a sentence, and the spans between pauses are decoded separately (None: never).
    blank_penalty: subtracted from the blank's log-probability in every frame (the frame is then
    renormalised) before the search; a small CTC model blanks out letters it is unsure of, and with
    the LM to choose among the words this lets through, validation CER fell by 2-3 points (None:
    `lm_weights.json`'s tuned value if it has one, else 0; docs/lm.md).
    log_add: when two hypotheses reach the same state, add their probabilities (the CTC sum over
    alignments) instead of keeping the better one (Viterbi, flashlight's default). On the embedded
    model's 208 validation utterances at beam 512 it lowered CER from 10.86 to 10.46 % at the same
    weights (docs/lm.md), so it is on by default.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        blank_id: int,
        delimiter: str = "|",
        lm: str | Path | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_size_token: int | None = 10,
        beam_threshold: float = 15.0,
        lexicon: Iterable[str] | None = None,
        unk_score: float = float("-inf"),
        pause_frames: int | None = 25,
        log_add: bool = True,
        blank_penalty: float | None = None,
        quiet: bool = True,
    ):
        self.tokens = list(tokens)
        if not self.tokens:
            raise ValueError("tokens is empty")
        if not 0 <= blank_id < len(self.tokens):
            raise ValueError(f"blank_id {blank_id} is outside the vocabulary of {len(self.tokens)}")
        if delimiter not in self.tokens:
            raise ValueError(f"delimiter {delimiter!r} is not a token of the vocabulary")
        if beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        if pause_frames is not None and pause_frames < 1:
            raise ValueError(f"pause_frames must be >= 1 or None, got {pause_frames}")
        self.pause_frames = pause_frames
        if lm is not None and not Path(lm).is_file():
            raise FileNotFoundError(f"language model {lm} not found")
        self.blank_id = blank_id
        self.delimiter = delimiter
        self.delimiter_id = self.tokens.index(delimiter)
        fallback = (read_lm_weights(lm) if lm is not None else None) or (DEFAULT_ALPHA, DEFAULT_BETA)
        self.alpha = float(fallback[0] if alpha is None else alpha)
        self.beta = float(fallback[1] if beta is None else beta)
        self.lm_path = Path(lm) if lm is not None else None
        if blank_penalty is None:
            blank_penalty = (read_blank_penalty(lm) if lm is not None else None) or 0.0
        self.blank_penalty = _finite_penalty(blank_penalty)
        letters = {t: i for i, t in enumerate(self.tokens)
                   if i not in (blank_id, self.delimiter_id) and not _is_symbol(t)}
        self._letter_ids = frozenset(letters.values())
        self._char_ids: dict[str, int] = {}  # a letter in either case -> its token (exact case first)
        for variant in (str.upper, str.lower, lambda c: c):
            self._char_ids.update({variant(t): i for t, i in letters.items() if len(t) == 1})
        self._beam_size_token = min(beam_size_token or len(self.tokens), len(self.tokens))
        self._beam_threshold = float(beam_threshold)
        self._unk_score = float(unk_score)
        self._beam_width = int(beam_width)
        self.log_add = bool(log_add)

        words: list[str] = []
        if self.lm_path is not None:
            words.extend(w for w in read_arpa_vocabulary(self.lm_path) if w not in SPECIAL)
        if lexicon is not None:
            words.extend(lexicon)
        self.lexicon_free = self.lm_path is None and lexicon is None
        self.skipped_words: list[str] = []  # lexicon words the vocabulary cannot spell
        self._spelling: dict[str, str] = {}  # word -> text in the vocabulary's own letters
        self._word_of_text: dict[str, str] = {}  # and back
        if self.lexicon_free:
            self._kenlm = None
            self._free_options = self._lexicon_free_options()
            return
        self._build_lexicon(words, quiet)

    def _spell(self, word: str) -> list[int] | None:
        """Token ids of `word`, a letter matched in either case; None if one has no token."""
        try:
            return [self._char_ids[ch] for ch in word]
        except KeyError:
            return None

    def _build_lexicon(self, words: list[str], quiet: bool) -> None:
        spelled: list[tuple[str, list[int]]] = []
        for word in dict.fromkeys(words):  # unique, first-seen order
            ids = self._spell(word)
            if ids is None:
                self.skipped_words.append(word)
            else:
                spelled.append((word, ids))
        if not spelled:
            raise ValueError("no lexicon word can be spelled with this vocabulary's tokens")
        self._words = [w for w, _ in spelled] + [UNK]  # word index -> word, as in the Dictionary
        self._word_index = {w: i for i, w in enumerate(self._words)}
        self._unk_word = len(self._words) - 1
        if self.lm_path is not None:
            with _quiet_stderr(quiet):
                self._kenlm = KenLM(str(self.lm_path), Dictionary(self._words))
            lm = self._kenlm
        else:
            self._kenlm = None
            lm = ZeroLM()
        self._trie = Trie(len(self.tokens), self.delimiter_id)
        start = lm.start(False)
        in_vocab_case = str.maketrans({ch: self.tokens[i] for ch, i in self._char_ids.items()})
        for widx, (word, ids) in enumerate(spelled):
            _, score = lm.score(start, widx)
            ids.append(self.delimiter_id)
            self._trie.insert(ids, widx, score)
            text = word.translate(in_vocab_case)
            self._spelling[word] = text
            self._word_of_text.setdefault(text, word)
        self._trie.smear(SmearingMode.MAX)
        self._lm = lm
        self._options = self._lexicon_options()

    def _lexicon_free_options(self) -> LexiconFreeDecoderOptions:
        return LexiconFreeDecoderOptions(
            beam_size=self._beam_width, beam_size_token=self._beam_size_token,
            beam_threshold=self._beam_threshold, lm_weight=0.0, sil_score=0.0,
            log_add=self.log_add, criterion_type=CriterionType.CTC)

    def _lexicon_options(self) -> LexiconDecoderOptions:
        return LexiconDecoderOptions(
            beam_size=self._beam_width, beam_size_token=self._beam_size_token,
            beam_threshold=self._beam_threshold, lm_weight=self.alpha * LN10,
            word_score=self.beta, unk_score=self._unk_score, sil_score=0.0, log_add=self.log_add,
            criterion_type=CriterionType.CTC)

    def with_weights(self, alpha: float, beta: float, blank_penalty: float | None = None) -> "CTCBeamDecoder":
        """A decoder with other LM weights (and blank penalty, if given) sharing this one's lexicon
        and loaded LM (no reload): for tuning them on a validation set."""
        other = copy.copy(self)
        other.alpha, other.beta = float(alpha), float(beta)
        if blank_penalty is not None:
            other.blank_penalty = _finite_penalty(blank_penalty)
        if not self.lexicon_free:
            other._options = other._lexicon_options()
        return other

    @property
    def beam_width(self) -> int:
        """Hypotheses kept per frame."""
        return self._beam_width

    def with_beam_width(self, beam_width: int) -> "CTCBeamDecoder":
        """A decoder with another beam width sharing this one's lexicon and loaded LM: for
        measuring what a wider beam buys on a validation set."""
        if beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        other = copy.copy(self)
        other._beam_width = int(beam_width)
        if self.lexicon_free:
            other._free_options = other._lexicon_free_options()
        else:
            other._options = other._lexicon_options()
        return other

    @classmethod
    def from_vocab(cls, vocab, **kwargs) -> "CTCBeamDecoder":
        """Build from a `models.CTCVocab` (its `.tokens`, `.blank_id`, `.delimiter`)."""
        return cls(list(vocab.tokens), vocab.blank_id, delimiter=vocab.delimiter, **kwargs)

    @property
    def vocabulary_size(self) -> int:
        """Symbols per frame the decoder expects."""
        return len(self.tokens)

    def lexicon_words(self) -> list[str]:
        """The words the decoder can spell (empty for the open-vocabulary lexicon-free mode)."""
        return list(self._spelling)

    def decode(self, log_probs: np.ndarray, frame_offset: int = 0,
               context: Sequence[str] = ()) -> list[WordSpan]:
        """Best word sequence for `log_probs` (frames, vocab), logits or log-probabilities (they
        are log-softmaxed here). Frame times are shifted by `frame_offset`. `context`: words said
        just before these frames, used as LM history (streaming re-decodes). A pause of at least
        `pause_frames` silent frames ends a sentence: the LM starts afresh after it."""
        scores = self._prepare(log_probs)
        words: list[WordSpan] = []
        for start, end in self.speech_segments(scores):
            words += self._decode_segment(scores[start:end], frame_offset + start,
                                          context if start == 0 else ())
        return words

    def speech_segments(self, log_probs: np.ndarray) -> list[tuple[int, int]]:
        """[start, end) spans between pauses (runs of >= `pause_frames` frames whose best token is
        the blank or the delimiter); the whole input when pauses are off."""
        t_frames = len(log_probs)
        if t_frames == 0:
            return []
        if self.pause_frames is None:
            return [(0, t_frames)]
        best = log_probs.argmax(axis=1)
        silent = np.concatenate([[False], (best == self.blank_id) | (best == self.delimiter_id), [False]])
        edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
        spans, start = [], 0
        for run_start, run_end in zip(edges[::2], edges[1::2]):
            if run_end - run_start >= self.pause_frames:
                if run_start > start:
                    spans.append((start, int(run_start)))
                start = int(run_end)
        if start < t_frames:
            spans.append((start, t_frames))
        return spans

    def _decode_segment(self, scores: np.ndarray, frame_offset: int,
                        context: Sequence[str]) -> list[WordSpan]:
        t_frames = scores.shape[0]
        if self.lexicon_free:
            decoder = LexiconFreeDecoder(self._free_options, ZeroLM(), self.delimiter_id,
                                         self.blank_id, [])
            result = decoder.decode(scores.ctypes.data, t_frames, scores.shape[1])[0]
            return self._words_from_delimiters(list(result.tokens)[1 : t_frames + 1], frame_offset)
        # One extra frame that can only be the delimiter lets the last word end with its `|`.
        padded = np.full((t_frames + 1, scores.shape[1]), -1e4, dtype=np.float32)
        padded[:t_frames] = scores
        padded[t_frames, self.delimiter_id] = 0.0
        lm = self._lm
        if context and self._kenlm is not None:
            lm = _ContextLM(self._kenlm, [self._word_index[self._word_of_text.get(w, UNK)]
                                          for w in context])
        # A decoder per call (cheap: the trie and LM are shared) keeps decode() reentrant.
        decoder = LexiconDecoder(self._options, self._trie, lm, self.delimiter_id, self.blank_id,
                                 self._unk_word, [], False)
        results = decoder.decode(padded.ctypes.data, t_frames + 1, padded.shape[1])
        if not results:
            return []
        best = results[0]
        path = list(best.tokens)[1 : t_frames + 1]  # drop the virtual start and the padding frame
        word_at = list(best.words)[1 : t_frames + 2]
        return self._words_from_lexicon(path, word_at, frame_offset)

    def _prepare(self, log_probs: np.ndarray) -> np.ndarray:
        arr = np.asarray(log_probs, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != len(self.tokens):
            raise ValueError(
                f"log_probs must be (frames, {len(self.tokens)}), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            arr = np.nan_to_num(arr, nan=-1e4, neginf=-1e4, posinf=1e4)
        norm = _log_softmax(arr)
        if self.blank_penalty:
            norm[:, self.blank_id] -= self.blank_penalty
            norm = _log_softmax(norm)
        return np.ascontiguousarray(norm, dtype=np.float32)

    def _char_span(self, path: list[int], lo: int, hi: int) -> tuple[str, int, int] | None:
        """Text and [start, end) frames of the letters emitted in path[lo:hi]."""
        chars, first, last, prev = [], None, None, self.blank_id
        for t in range(lo, hi):
            tok = path[t]
            if tok in self._letter_ids:
                if tok != prev:
                    chars.append(self.tokens[tok])
                if first is None:
                    first = t
                last = t
            prev = tok
        if first is None:
            return None
        return "".join(chars), first, last + 1

    def _words_from_lexicon(self, path: list[int], word_at: list[int], offset: int) -> list[WordSpan]:
        words, lo = [], 0
        for t, widx in enumerate(word_at):
            if widx < 0:
                continue
            span = self._char_span(path, lo, min(t + 1, len(path)))
            lo = t + 1
            if span is None:
                continue
            text, start, end = span
            if widx != self._unk_word:
                text = self._spelling[self._words[widx]]
            words.append(WordSpan(text, start + offset, end + offset))
        return words

    def _words_from_delimiters(self, path: list[int], offset: int) -> list[WordSpan]:
        words, lo = [], 0
        for t in range(len(path) + 1):
            if t == len(path) or path[t] == self.delimiter_id:
                span = self._char_span(path, lo, t)
                if span is not None:
                    words.append(WordSpan(span[0], span[1] + offset, span[2] + offset))
                lo = t + 1
        return words
