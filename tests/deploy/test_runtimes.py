"""prismlab.deploy.runtimes.measure leaves the caller's process as it found it."""

import torch

from prismlab.deploy.runtimes import measure


def test_measure_restores_the_callers_thread_count():
    before = torch.get_num_threads()
    threads = 1 if before > 1 else 2
    spec = {
        "model": "baseline_cnn",
        "num_classes": 4,
        "channels": "RGB",
        "runtime": "pytorch_fp32",
        "size": 16,
        "batch": 2,
        "steps": 1,
        "calls": 2,
        "threads": threads,
        "seed": 0,
    }
    try:
        out = measure(spec)
        assert out["img_s_b64"] > 0
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
