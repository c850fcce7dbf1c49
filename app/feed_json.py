"""Parse a client's JSON control message with limits, so hostile text cannot hurt the server.

Python's `json` recurses once per nesting level (a deep enough array raises `RecursionError`)
and turns any digit string into an int (5,000 digits raise `ValueError`, a million take seconds).
Control messages are tiny, so `parse_control` refuses, before parsing, text longer than
`MAX_CONTROL_CHARS` or nested deeper than `MAX_DEPTH` (brackets counted outside strings), and,
while parsing, numbers longer than `MAX_NUMBER_CHARS` and the non-JSON constants NaN/Infinity.
Every refusal is a `ControlError` whose message is short and safe to echo.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

MAX_CONTROL_CHARS = 4096  # a `start` message is under 100 characters
MAX_DEPTH = 8  # control messages are flat objects
MAX_NUMBER_CHARS = 32  # enough for any float64 or 64-bit integer written out
MAX_ECHO_CHARS = 40  # values quoted back in an error are cut to this

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class ControlError(ValueError):
    """A control message refused; the message is the reason to send back."""


def short(value: Any) -> str:
    """`repr(value)` cut to MAX_ECHO_CHARS, for quoting client input in an error."""
    text = repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 3] + "..."


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of JSON `text`, ignoring brackets inside strings."""
    bare = _STRING.sub('""', text)
    codes = np.frombuffer(bare.encode("utf-8", "replace"), dtype=np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    closes = (codes == ord("]")) | (codes == ord("}"))
    steps = opens.astype(np.int32) - closes.astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _number(text: str, kind: type) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        raise ControlError(f"number too long ({len(text)} characters, at most {MAX_NUMBER_CHARS})")
    return kind(text)


def _constant(name: str) -> Any:
    raise ControlError(f"{name} is not JSON")


def parse_control(text: str) -> Any:
    """Parse one control message; raises ControlError with a short reason."""
    if len(text) > MAX_CONTROL_CHARS:
        raise ControlError(f"text message of {len(text)} characters; control messages take at most {MAX_CONTROL_CHARS}")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise ControlError(f"JSON nested {depth} deep; at most {MAX_DEPTH}")
    try:
        return json.loads(
            text, parse_int=lambda s: _number(s, int), parse_float=lambda s: _number(s, float),
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise ControlError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    except RecursionError:  # cannot happen below MAX_DEPTH; kept so no input ever escapes
        raise ControlError("JSON nested too deeply") from None
