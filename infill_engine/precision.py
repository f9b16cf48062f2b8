"""Which float type runs the bundled model: bf16 where the hardware computes it natively.

On a CPU with avx512_bf16 or AMX, bf16 matrix products run several times faster than fp32
(`diffill bench` prints both side by side, with how often their outputs agree); elsewhere
bf16 is emulated and slower, so fp32 stays.  GPUs always take bf16.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs that advertise bf16 instructions (read from /proc/cpuinfo; False elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool(NATIVE_BF16_FLAGS & set(flags))


def resolve_dtype(precision: str, device):
    """'auto' -> bf16 on a GPU or a CPU with native bf16, else fp32; 'fp32' / 'bf16' as given."""
    import torch  # here, so naming the choices (PRECISIONS) costs no torch import

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    on_gpu = torch.device(device).type != "cpu"
    return torch.bfloat16 if on_gpu or cpu_has_native_bf16() else torch.float32
