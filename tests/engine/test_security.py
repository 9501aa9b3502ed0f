"""Untrusted files cannot run code: checkpoints load with weights_only=True, YAML with safe_load,
and Pillow's decompression-bomb limit stays on.

Each hostile file carries a payload that would create a marker file; the tests check that it is
refused with a clear error and that the marker never appears.
"""

import os
import pickle
import subprocess
import sys

import pytest
import torch
from PIL import Image

import prismlab.data.decode  # noqa: F401 - sets the pixel limit on import
from prismlab.cli import main
from prismlab.engine.rundir import load_checkpoint
from prismlab.errors import DataError


class Payload:
    """Unpickling this runs `touch marker` (pickle calls whatever __reduce__ names)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_evil(path, marker, kind: str):
    # A checkpoint-shaped dict, so nothing but the payload makes it fail.
    state = {"model_spec": {"name": "baseline_cnn", "num_classes": 4}, "config": {}, "model": Payload(marker)}
    if kind == "zip":  # torch's current format
        torch.save(state, path)
    elif kind == "legacy":  # torch's pre-1.6 format
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle with a .pt name
        path.write_bytes(pickle.dumps(state, protocol=4))
    return path


@pytest.mark.parametrize("kind", ["zip", "legacy", "raw-pickle"])
def test_load_checkpoint_refuses_pickled_code(tmp_path, kind):
    marker = tmp_path / "pwned"
    evil = write_evil(tmp_path / "evil.pt", marker, kind)
    with pytest.raises(DataError, match=r"evil\.pt: refused to load: .*weights_only=True") as err:
        load_checkpoint(evil)
    assert "\n" not in str(err.value) and not marker.exists()
    if kind != "raw-pickle":  # torch names the global it would have imported
        assert "posix.system" in str(err.value) or "os.system" in str(err.value)


@pytest.mark.parametrize("command", ["predict", "train-resume"])
def test_cli_refuses_pickled_code(tmp_path, tiny_data, capsys, command):
    marker = tmp_path / "pwned"
    evil = write_evil(tmp_path / "evil.pt", marker, "zip")
    image = next((tiny_data / "images").glob("*/*.jpg"))
    argv = {
        "predict": ["predict", str(image), "--checkpoint", str(evil)],
        # --config: evil.pt lies in no run folder whose config a resume could take
        "train-resume": [
            "train",
            "--config",
            "ours",
            "--data",
            str(tiny_data),
            "--resume",
            str(evil),
            "batch_size=16",
            "image_size=24",
        ],
    }[command]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"prismlab: error: {evil}: refused to load") and err.count("\n") == 1, err
    assert not marker.exists()


def test_eval_refuses_pickled_code_in_a_real_process(tmp_path, tiny_data):
    marker = tmp_path / "pwned"
    evil = write_evil(tmp_path / "evil.pt", marker, "zip")
    proc = subprocess.run(
        [sys.executable, "-m", "prismlab", "eval", "--checkpoint", str(evil), "--split", str(tiny_data / "test.txt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"prismlab: error: {evil}: refused to load") and proc.stderr.count("\n") == 1
    assert not marker.exists()


@pytest.mark.parametrize("where", ["config-file", "override", "nested-override", "layers-model-kw"])
def test_yaml_tags_never_run_code(tmp_path, tiny_data, capsys, where):
    marker = tmp_path / "pwned"
    tag = f"!!python/object/apply:os.system ['touch {marker}']"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"epochs: {tag}\n")
    base = ["train", "--data", str(tiny_data), "--out", str(tmp_path / "run")]
    argv = {
        "config-file": [*base, "--config", str(evil)],
        "override": [*base, f"epochs={tag}"],
        "nested-override": [*base, f"model_kw.adapter={tag}"],
        "layers-model-kw": ["layers", "baseline_cnn", f"adapter={tag}"],
    }[where]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("prismlab: error: ") and err.count("\n") == 1, err
    assert not marker.exists()
    if where == "config-file":
        assert str(evil) in err


def test_decompression_bomb_limit_is_on():
    # Set by prismlab.data.decode on import; None would switch Pillow's guard off. The CLI's refusal of
    # a real bomb file is in tests/test_reliability.py.
    assert Image.MAX_IMAGE_PIXELS == prismlab.data.decode.MAX_PIXELS <= 100_000_000
