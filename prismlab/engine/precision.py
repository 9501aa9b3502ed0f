"""Which precision a run computes in: `amp` = auto | bf16 | off.

auto is bf16 autocast on CUDA and fp32 on CPU. bf16 on a CPU pays off only where the CPU has
native bf16 instructions (avx512_bf16, amx_bf16); a CPU without them emulates bf16 and trains
several times slower (`prismlab bench speed` measures both precisions). A CPU run in bf16 is
therefore asked for by name (amp=bf16), so that `auto` computes the same thing on every CPU and a
run resumed on another machine keeps its precision.
"""

from __future__ import annotations

from pathlib import Path

import torch

AMP_MODES = ("auto", "bf16", "off")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU executes bf16 arithmetic natively (Linux /proc/cpuinfo flags)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(f in flags for f in NATIVE_BF16_FLAGS)
    return False


def use_bf16(amp: str, device: torch.device) -> bool:
    """amp -> whether to autocast to bf16 on this device."""
    if amp == "bf16":
        return True
    return amp == "auto" and device.type == "cuda"


def precision_name(bf16: bool) -> str:
    return "bf16" if bf16 else "fp32"
