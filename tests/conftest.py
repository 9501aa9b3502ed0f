"""Shared fixtures: one tiny synthetic data set per session, a private decode cache per test, and
one CPU thread: the tests' tensors are tiny, so more threads only contend with each other."""

import shutil
from pathlib import Path

import pytest
import torch

from prismlab.data.synth import make_synthetic

# Small enough that a CPU epoch takes well under a second: 4 classes, 24px.
TINY = dict(num_classes=4, train_per_class=24, val_per_class=6, test_per_class=6, size=24)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A course-layout folder (images/, train/val/test.txt, classes.txt); treat it as read-only."""
    return make_synthetic(tmp_path_factory.mktemp("tiny") / "data", seed=0, **TINY)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """Keeps every test (and the subprocesses it starts) out of the user's ~/.cache/prismlab."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("PRISMLAB_CACHE", str(path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for subprocesses, as one_thread does here
    return path


@pytest.fixture
def restore_torch_globals():
    """train() sets process-wide torch state (threads, deterministic algorithms); give it back."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


@pytest.fixture
def stopped_after(tmp_path, monkeypatch):
    """stopped_after(n) -> the folder a run will have left had it been interrupted after epoch n: a
    spy on the per-epoch metrics writer copies the run folder at that point."""
    from prismlab.engine.rundir import RunDir

    def install(epochs: int) -> Path:
        snapshot = tmp_path / "stopped"
        real = RunDir.write_metrics

        def write_and_snapshot(run, history):
            real(run, history)
            if len(history) == epochs and not snapshot.exists():
                shutil.copytree(run.path, snapshot)

        monkeypatch.setattr(RunDir, "write_metrics", write_and_snapshot)
        return snapshot

    return install
