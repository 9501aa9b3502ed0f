"""Crashes lose nothing: Ctrl-C and kill -9 then --resume, a NaN loss, a crash in the middle of a save.

The interruption tests run real `prismlab train` processes through PARKED, which parks the process
at the third step of a chosen epoch (the previous epoch's last.pt is on disk, the current one has
taken optimiser steps), so that the signal lands mid-epoch every time instead of whenever a poll looks.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

from prismlab.cli import main
from prismlab.engine.rundir import load_checkpoint, save_checkpoint
from prismlab.files import WriteError
from prismlab.models import create_model

# deterministic=true, threads=1: bit-exact CPU results, the precondition of comparing with torch.equal.
RUN = ["epochs=3", "batch_size=16", "image_size=24", "lr=0.05", "deterministic=true", "threads=1"]

PARKED = """
import signal, sys, time
# What a terminal's Ctrl-C meets: Python's KeyboardInterrupt handler. A test run started in the
# background by a non-interactive shell (nohup ... &) inherits SIGINT as ignored, and Python then
# installs no handler, so without this the signal would be lost and the test would hang.
signal.signal(signal.SIGINT, signal.default_int_handler)
import prismlab.engine.train as train
park_epoch, real_lr_at = int(sys.argv[1]), train.lr_at

def lr_at(step, total, cfg, steps_per_epoch):
    if step == (park_epoch - 1) * steps_per_epoch + 2:
        print("parked", flush=True)
        time.sleep(300)
    return real_lr_at(step, total, cfg, steps_per_epoch)

train.lr_at = lr_at
from prismlab.cli import main
sys.exit(main(sys.argv[2:]))
"""


def parked_run(epoch: int, args: list, env: dict) -> subprocess.Popen:
    """`prismlab train *args`, parked in `epoch` (1-based) until a signal comes."""
    return subprocess.Popen(
        [sys.executable, "-c", PARKED, str(epoch), "train", *map(str, args)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_parked(proc: subprocess.Popen) -> None:
    watchdog = threading.Timer(300, proc.kill)  # a run that hangs before parking fails instead of blocking
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.strip() == "parked":
                return
    finally:
        watchdog.cancel()
    _, err = proc.communicate()
    pytest.fail(f"training ended before the park point (exit {proc.returncode}): {err}")


@contextlib.contextmanager
def own_torch_globals():
    """train() sets threads and deterministic mode for the whole process; give them back after."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """A run stopped by Ctrl-C in epoch 2, resumed, killed with SIGKILL in epoch 3, resumed again;
    and the same run never interrupted. Only the signalled runs need their own process; the others
    run in this one (a process start costs seconds of imports)."""
    tmp = tmp_path_factory.mktemp("faults")
    cache = tmp / "cache"
    env = {**os.environ, "PRISMLAB_CACHE": str(cache)}
    run, straight = tmp / "run", tmp / "straight"
    args = ["--data", tiny_data, "--out", run, *RUN]
    resume = ["--resume", run / "last.pt"]
    res = {}
    proc = parked_run(2, args, env)
    try:
        with own_torch_globals():  # while the subprocess starts up
            assert main(["train", "--data", str(tiny_data), "--out", str(straight), *RUN, f"cache_dir={cache}"]) == 0

        wait_parked(proc)
        res["epoch_at_ctrl_c"] = load_checkpoint(run / "last.pt")["epoch"]
        proc.send_signal(signal.SIGINT)
        _, res["ctrl_c_stderr"] = proc.communicate(timeout=120)
        res["ctrl_c_exit"] = proc.returncode
        res["after_ctrl_c"] = load_checkpoint(run / "last.pt")

        proc = parked_run(3, [*resume, *args], env)
        wait_parked(proc)
        res["epoch_at_kill"] = load_checkpoint(run / "last.pt")["epoch"]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=120)
        res["kill_exit"] = proc.returncode

        with own_torch_globals():
            res["final_exit"] = main(["train", *map(str, resume + args), f"cache_dir={cache}"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return run, straight, res


def test_ctrl_c_keeps_the_last_finished_epoch_and_exits_130(runs):
    run, _, res = runs
    assert res["epoch_at_ctrl_c"] == 1 and res["ctrl_c_exit"] == 130
    err = res["ctrl_c_stderr"]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("prismlab: interrupted: stopped during epoch 2") and f"--resume {run / 'last.pt'}" in err
    # The half-done epoch 2 is dropped, so that --resume repeats it exactly.
    assert res["after_ctrl_c"]["interrupted"] is True and res["after_ctrl_c"]["epoch"] == 1
    assert "interrupted: stopped during epoch 2" in (run / "train.log").read_text()


def test_kill_9_mid_epoch_leaves_the_last_finished_epoch(runs):
    _, _, res = runs
    assert res["epoch_at_kill"] == 2 and res["kill_exit"] == -signal.SIGKILL


def test_interrupted_and_killed_run_ends_like_an_uninterrupted_one(runs):
    run, straight, res = runs
    assert res["final_exit"] == 0
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(straight / name), load_checkpoint(run / name)
        # best.pt is whichever epoch validated best: the same one in both runs.
        assert a["epoch"] == b["epoch"] and b["interrupted"] is False
        assert name == "best.pt" or a["epoch"] == 3
        assert a["model"].keys() == b["model"].keys()
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), f"{name}: {k} differs"
        timing = {"time_s", "img_s"}
        assert [{k: v for k, v in h.items() if k not in timing} for h in a["history"]] == [
            {k: v for k, v in h.items() if k not in timing} for h in b["history"]
        ]
    assert (
        json.loads((straight / "eval-test.json").read_text())["results"]
        == json.loads((run / "eval-test.json").read_text())["results"]
    )


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--out", str(run), "batch_size=16", "image_size=24", "test_split="]
    assert main([*args, "epochs=1"]) == 0
    good = load_checkpoint(run / "last.pt")
    capsys.readouterr()
    # Resumed with an absurd learning rate: epoch 2 blows up.
    code = main([*args, "--resume", str(run / "last.pt"), "epochs=3", "lr=1e30"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "loss became nan at epoch 2" in err and f"the last good checkpoint is {run / 'last.pt'}" in err
    kept = load_checkpoint(run / "last.pt")
    assert kept["epoch"] == 1 and all(torch.equal(kept["model"][k], v) for k, v in good["model"].items())
    assert "loss became nan" in (run / "train.log").read_text()


def test_nan_in_the_first_epoch_says_nothing_was_saved(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        ["train", "--data", str(tiny_data), "--out", str(run), "batch_size=16", "image_size=24", "epochs=1", "lr=1e30"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "loss became nan at epoch 1" in err
    assert "no checkpoint was saved" in err and not (run / "last.pt").exists()


def model_state(seed: int) -> dict:
    torch.manual_seed(seed)
    model = create_model("baseline_cnn", num_classes=4)
    return {"model_spec": model.spec, "model": model.state_dict(), "config": {"image_size": 24}}


CRASH_MID_SAVE = """
import os, sys, torch
from prismlab.engine.rundir import save_checkpoint

real_save = torch.save

def half_then_die(obj, f, *a, **kw):
    # Write the real bytes, but only half of them reach the file before the process dies.
    import io
    buf = io.BytesIO()
    real_save(obj, buf, *a, **kw)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    os._exit(3)

torch.save = half_then_die
save_checkpoint({"model": {"w": torch.ones(50_000)}}, sys.argv[1])
"""


def test_a_crash_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    previous = model_state(0)
    save_checkpoint(previous, path)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_MID_SAVE, str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 3, proc.stderr
    # The crash hit mid-write: the half file is the temp file, never the checkpoint's path.
    [half] = [p for p in tmp_path.iterdir() if p != path]
    assert half.name.startswith(".last.pt.tmp") and 0 < half.stat().st_size < path.stat().st_size
    loaded = load_checkpoint(path)
    assert all(torch.equal(loaded["model"][k], v) for k, v in previous["model"].items())


def test_a_failed_save_removes_its_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(model_state(0), path)
    before = path.read_bytes()

    def disk_full(obj, f, *a, **kw):
        f.write(b"\0" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(
        WriteError, match=r"last.pt: cannot write checkpoint \(no space left on the disk\); the previous"
    ):
        save_checkpoint(model_state(1), path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"] and path.read_bytes() == before
