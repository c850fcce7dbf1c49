"""What the CPU can do fast: native bfloat16 arithmetic or not (it decides which paths run in bf16)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo). Without them CPU bf16 matmuls and convs
    are emulated and several times slower than fp32; unknown (no /proc/cpuinfo) counts as no."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
