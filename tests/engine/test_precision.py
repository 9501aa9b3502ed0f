"""amp = auto | bf16 | off: what each computes in, the CPU flag probe, and bf16 training on CPU."""

import pytest
import torch

from prismlab.engine.config import make_config
from prismlab.engine.precision import cpu_has_native_bf16, cpu_trains_channels_last, use_bf16, use_channels_last
from prismlab.engine.step import make_optimizer, train_step
from prismlab.errors import ConfigError
from prismlab.models import create_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_bf16_on_cuda_only_and_bf16_is_asked_for_by_name():
    assert (use_bf16("auto", CUDA), use_bf16("auto", CPU)) == (True, False)
    assert (use_bf16("bf16", CPU), use_bf16("bf16", CUDA)) == (True, True)
    assert (use_bf16("off", CPU), use_bf16("off", CUDA)) == (False, False)


def test_config_takes_the_three_modes_and_refuses_others():
    for mode in ("auto", "bf16", "off"):
        assert make_config(overrides={"amp": mode}).amp == mode
    with pytest.raises(ConfigError, match="amp must be one of auto, bf16, off, got 'fp16'"):
        make_config(overrides={"amp": "fp16"})


@pytest.mark.parametrize(
    "flags, native",
    [
        ("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", True),
        ("fpu sse avx2 amx_bf16 amx_tile", True),
        ("fpu sse avx avx2 fma", False),
        ("fpu avx512_bf16x", False),  # a flag is a whole word
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(info) is native
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def test_bf16_on_cpu_trains_with_finite_loss_close_to_fp32():
    # The same model and batch, a few steps each way: bf16 autocast follows fp32's loss closely.
    cfg = make_config(overrides={"lr": 0.05, "label_smoothing": 0.0})
    torch.manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    y = torch.arange(32) % 4
    init = create_model("baseline_cnn", num_classes=4).state_dict()
    losses = {}
    for amp in (False, True):
        model = create_model("baseline_cnn", num_classes=4)
        model.load_state_dict(init)
        opt = make_optimizer(model, cfg)
        losses[amp] = []
        for _ in range(4):
            logits, loss, finite = train_step(model, opt, x, y, ["RGB"], cfg, amp)
            assert finite
            losses[amp].append(loss.item())
        if amp:  # autocast really ran: the trunk's conv outputs were bf16
            assert logits.dtype == torch.bfloat16
    assert losses[True][-1] < losses[True][0]  # it learns
    assert losses[True] == pytest.approx(losses[False], rel=0.03)


AVX512 = "fpu sse avx2 avx512f avx512bw avx512vl avx512dq"


@pytest.mark.parametrize(
    "flags, cap, trains",
    [
        (AVX512, "", True),
        (AVX512 + " avx512_bf16", "AVX512_CORE_BF16", True),
        (AVX512, "AVX2", False),  # oneDNN held to its AVX2 kernels
        ("fpu sse avx avx2 fma", "", False),
        ("fpu sse avx2 avx512f", "", False),  # avx512f alone is not oneDNN's avx512_core
    ],
)
def test_channels_last_training_needs_onednn_avx512_kernels(tmp_path, monkeypatch, flags, cap, trains):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert cpu_trains_channels_last(info) is trains


def test_channels_last_config_takes_auto_true_false(monkeypatch):
    assert make_config().channels_last == "auto"
    assert [make_config(overrides=[f"channels_last={v}"]).channels_last for v in ("true", "false", "auto")] == [
        "true",
        "false",
        "auto",
    ]
    assert make_config(overrides={"channels_last": False}).channels_last == "false"  # a config.yaml's boolean
    with pytest.raises(ConfigError, match="channels_last must be one of auto, true, false, got 'yes'"):
        make_config(overrides={"channels_last": "yes"})
    assert (use_channels_last("auto", CUDA), use_channels_last("false", CUDA)) == (True, False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert use_channels_last("auto", CPU) is False and use_channels_last("false", CPU) is False
    with pytest.raises(ConfigError, match="oneDNN#6035"):
        use_channels_last("true", CPU)
