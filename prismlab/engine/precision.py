"""How a run computes: its precision (`amp` = auto | bf16 | off) and its memory layout
(`channels_last` = auto | true | false), from what this machine's CPU can do.

auto precision is bf16 autocast on CUDA and fp32 on CPU. bf16 on a CPU pays off only where the CPU
has native bf16 instructions (avx512_bf16, amx_bf16); a CPU without them emulates bf16 and trains
several times slower (`prismlab bench speed` measures both precisions). A CPU run in bf16 is
therefore asked for by name (amp=bf16), so that `auto` computes the same thing on every CPU and a
run resumed on another machine keeps its precision.

The layout changes no maths, only speed and rounding. auto is channels-last on CUDA and on CPUs
whose oneDNN kernels are AVX-512 ones; with AVX2 kernels oneDNN's channels-last backward of a
strided 1x1 conv with 3 input channels (shallow's stem) kills the process (uxlfoundation/oneDNN#6035;
reproduced on torch 2.14 with ONEDNN_MAX_CPU_ISA=AVX2), so there the layout stays NCHW and
channels_last=true is refused. torch.compile's inductor turns convolutions channels-last by itself
(its layout optimisation), which meets the same bug, so compile_model switches that off there.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from prismlab.errors import ConfigError

AMP_MODES = ("auto", "bf16", "off")
LAYOUTS = ("auto", "true", "false")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
AVX512_CORE_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")  # oneDNN's avx512_core ISA
RECORDED_FLAGS = ("avx2", *AVX512_CORE_FLAGS, "avx512_vnni", *NATIVE_BF16_FLAGS, "amx_tile")
# ONEDNN_MAX_CPU_ISA values that keep oneDNN off its AVX-512 kernels
BELOW_AVX512 = ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU executes bf16 arithmetic natively."""
    return any(f in cpu_flags(cpuinfo) for f in NATIVE_BF16_FLAGS)


def cpu_trains_channels_last(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether oneDNN runs AVX-512 kernels here, where its channels-last training is right
    (tests/engine/test_channels_last.py checks the gradients)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").lower()
    return cap not in BELOW_AVX512 and all(f in cpu_flags(cpuinfo) for f in AVX512_CORE_FLAGS)


def use_bf16(amp: str, device: torch.device) -> bool:
    """amp -> whether to autocast to bf16 on this device."""
    if amp == "bf16":
        return True
    return amp == "auto" and device.type == "cuda"


def use_channels_last(layout: str, device: torch.device) -> bool:
    """channels_last -> whether the model and its input are channels-last on this device."""
    safe = device.type == "cuda" or cpu_trains_channels_last()
    if layout == "true" and not safe:
        raise ConfigError(
            "channels_last=true: this CPU's oneDNN kernels are AVX2 ones, whose channels-last "
            "backward of a strided 1x1 conv crashes (oneDNN#6035); use channels_last=auto or false"
        )
    return layout == "true" or (layout == "auto" and safe)


def compile_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """torch.compile, keeping inductor's convolutions NCHW where oneDNN's channels-last training is
    broken (a compiled `shallow` step corrupts the heap there otherwise)."""
    if device.type == "cpu" and not cpu_trains_channels_last():
        import torch._inductor.config as inductor  # imported here: it loads the compiler stack

        inductor.layout_optimization = False
    return torch.compile(model)


def precision_name(bf16: bool) -> str:
    return "bf16" if bf16 else "fp32"
