"""bench/demo_report's scoring of the bundled demo: names, turns and extra labels (no model run)."""

from __future__ import annotations

from bench.demo_report import DEMO, score
from engine.scoring import Segment, read_rttm

REFERENCE = read_rttm((DEMO / "conversation.rttm").read_text())["conversation"]
ENROLLED = {"Alice", "Bruno"}


def _renamed(names: dict[str, str]) -> list[Segment]:
    return [Segment(names.get(s.speaker, s.speaker), s.start, s.end) for s in REFERENCE]


def test_the_reference_with_an_unknown_guest_is_right() -> None:
    result = score(REFERENCE, _renamed({"guest": "unknown-1"}), ENROLLED)
    assert result["ok"] and result["extra_labels"] == [] and result["der"] == 0.0
    assert result["named"] == {"Alice": 1.0, "Bruno": 1.0, "guest": 1.0}
    assert result["turns_right"] == "12/12" and result["guest_label"] == {"guest": "unknown-1"}


def test_a_known_voice_called_unknown_is_an_extra_label() -> None:
    bruno = next(s for s in REFERENCE if s.speaker == "Bruno")
    hyp = [Segment("unknown-2", s.start, s.end) if s == bruno else s for s in _renamed({"guest": "unknown-1"})]
    result = score(REFERENCE, hyp, ENROLLED)
    assert not result["ok"] and result["extra_labels"] == ["unknown-2"]
    assert result["turns_right"] == "11/12" and result["named"]["Bruno"] < 0.9


def test_an_enrolled_name_on_the_guest_is_wrong_and_a_short_slip_is_not_a_wrong_turn() -> None:
    as_alice = score(REFERENCE, _renamed({"guest": "Alice"}), ENROLLED)
    assert as_alice["named"]["guest"] == 0.0 and not as_alice["ok"]
    # half a second of Alice's first turn named Bruno: her share drops, every turn is still hers
    first = REFERENCE[0]
    slip = [Segment("Bruno", first.start, first.start + 8000), Segment("Alice", first.start + 8000, first.end)]
    hyp = slip + [s if s.speaker != "guest" else Segment("unknown-1", s.start, s.end) for s in REFERENCE[1:]]
    result = score(REFERENCE, hyp, ENROLLED)
    assert result["ok"] and 0.9 < result["named"]["Alice"] < 1.0
