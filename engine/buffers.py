"""Rolling, bounded buffers indexed by absolute position (sample or frame since stream start).

Callers read by absolute index and say up to where data may be forgotten; memory stays bounded
however long the stream runs. A read of forgotten data raises instead of returning wrong data.
"""

from __future__ import annotations

import numpy as np


class RollingArray:
    """An append-only array along axis 0 with absolute indexing and a front that can be dropped.

    `capacity` bounds the live rows: an append that would exceed it raises, because silently
    dropping audio would break the engine's exactly-once guarantees.
    """

    def __init__(self, capacity: int, row_shape: tuple[int, ...] = (), dtype: type = np.float32) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._data = np.zeros((capacity, *row_shape), dtype=dtype)
        self._start = 0  # absolute index of _data[0]
        self._len = 0  # live rows

    @property
    def start(self) -> int:
        """Absolute index of the oldest row still held."""
        return self._start

    @property
    def end(self) -> int:
        """Absolute index one past the newest row (rows ever appended)."""
        return self._start + self._len

    def __len__(self) -> int:
        return self._len

    def append(self, rows: np.ndarray) -> None:
        n = len(rows)
        if n == 0:
            return
        if self._len + n > self.capacity:
            raise OverflowError(
                f"rolling buffer full: {self._len} + {n} rows > capacity {self.capacity}; "
                "the reader has fallen behind (call discard_before)"
            )
        self._data[self._len : self._len + n] = rows
        self._len += n

    def extend_to(self, end: int, fill: float = 0.0) -> None:
        """Grow with `fill` rows until `end` (absolute)."""
        if end > self.end:
            self.append(np.full((end - self.end, *self._data.shape[1:]), fill, dtype=self._data.dtype))

    def view(self, start: int, end: int) -> np.ndarray:
        """Rows [start, end) by absolute index (a view: copy before the buffer changes)."""
        if start < self._start or end > self.end or start > end:
            raise IndexError(f"rows [{start}, {end}) not held (holding [{self._start}, {self.end}))")
        return self._data[start - self._start : end - self._start]

    def discard_before(self, index: int) -> None:
        """Forget rows before absolute `index` (no-op for rows already forgotten)."""
        drop = min(max(0, index - self._start), self._len)
        if drop:
            self._data[: self._len - drop] = self._data[drop : self._len]
            self._len -= drop
            self._start += drop

    def reset(self) -> None:
        self._start = 0
        self._len = 0
