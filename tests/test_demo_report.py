"""bench/demo_report's scoring of the bundled demo: names, turns and extra labels (no model run)."""

from __future__ import annotations

from bench.demo_report import DEMO, score
from engine.scoring import Segment, read_rttm

REFERENCE = read_rttm((DEMO / "conversation.rttm").read_text())["conversation"]
ENROLLED = {"Alice", "Bruno"}
END = 37 * 16000


def _renamed(names: dict[str, str]) -> list[Segment]:
    return [Segment(names.get(s.speaker, s.speaker), s.start, s.end) for s in REFERENCE]


def test_the_reference_with_an_unknown_guest_is_right() -> None:
    result = score(REFERENCE, _renamed({"guest": "unknown-1"}), ENROLLED, END)
    assert result.ok and result.extra_labels == [] and result.der == 0.0
    assert result.named == {"Alice": 1.0, "Bruno": 1.0, "guest": 1.0}
    assert (result.turns_right, result.turns) == (12, 12) and result.guest_labels == {"guest": "unknown-1"}


def test_a_known_voice_called_unknown_is_an_extra_label() -> None:
    bruno = next(s for s in REFERENCE if s.speaker == "Bruno")
    hyp = [Segment("unknown-2", s.start, s.end) if s == bruno else s for s in _renamed({"guest": "unknown-1"})]
    result = score(REFERENCE, hyp, ENROLLED, END)
    assert not result.ok and result.extra_labels == ["unknown-2"]
    assert result.turns_right == 11 and result.named["Bruno"] < 0.9


def test_an_enrolled_name_on_the_guest_is_wrong() -> None:
    result = score(REFERENCE, _renamed({"guest": "Alice"}), ENROLLED, END)
    assert result.named["guest"] == 0.0 and result.guest_labels == {"guest": ""}
    assert result.turns_right == 12 - sum(s.speaker == "guest" for s in REFERENCE) and not result.ok


def test_an_enrolled_name_that_is_not_in_the_conversation_is_an_extra_label() -> None:
    hyp = _renamed({"guest": "unknown-1"}) + [Segment("Carol", 36 * 16000, 36 * 16000 + 4000)]
    result = score(REFERENCE, hyp, ENROLLED | {"Carol"}, END)
    assert result.extra_labels == ["Carol"] and not result.ok


def test_a_short_slip_is_not_a_wrong_turn_and_half_a_turn_unlabelled_is() -> None:
    first = REFERENCE[0]
    rest = _renamed({"guest": "unknown-1"})[1:]
    slip = [Segment("Bruno", first.start, first.start + 8000), Segment("Alice", first.start + 8000, first.end)]
    result = score(REFERENCE, slip + rest, ENROLLED, END)
    assert result.ok and 0.9 < result.named["Alice"] < 1.0
    # only the first 40 % of Alice's first turn labelled at all: the turn is not right
    head = [Segment("Alice", first.start, first.start + (first.end - first.start) * 2 // 5)]
    result = score(REFERENCE, head + rest, ENROLLED, END)
    assert result.turns_right == 11 and not result.ok


def test_labels_inside_overlaps_are_not_scored_and_no_hypothesis_names_nobody() -> None:
    overlaps = [(a, b) for a, b in zip(REFERENCE, REFERENCE[1:]) if b.start < a.end]
    assert overlaps, "the demo has overlapping turns"
    a, b = overlaps[0]
    labels = {"Alice": "Alice", "Bruno": "Bruno", "guest": "unknown-1"}
    third = (set(labels) - {a.speaker, b.speaker}).pop()
    # the overlap carries only the third speaker's label: outside solo speech, so nobody loses anything
    hyp = [Segment(labels[s.speaker], s.start, b.start) if s == a else
           Segment(labels[s.speaker], a.end, s.end) if s == b else Segment(labels[s.speaker], s.start, s.end)
           for s in REFERENCE] + [Segment(labels[third], b.start, a.end)]
    result = score(REFERENCE, hyp, ENROLLED, END)
    assert result.named == {"Alice": 1.0, "Bruno": 1.0, "guest": 1.0} and result.turns_right == 12
    empty = score(REFERENCE, [], ENROLLED, END)
    assert empty.turns_right == 0 and empty.der == 1.0 and empty.guest_labels == {"guest": ""}
    assert set(empty.named.values()) == {0.0}
