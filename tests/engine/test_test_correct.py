"""Each test image's score, kept by the final test (eval-test.json's test_correct) and read back by
evaluate.test_correct: the bootstrap intervals resample the very evaluation the accuracy comes from."""

import json

import pytest

from prismlab.engine import evaluate
from prismlab.engine.config import make_config
from prismlab.engine.rundir import RunDir
from prismlab.engine.train import train
from prismlab.errors import DataError

pytestmark = pytest.mark.usefixtures("restore_torch_globals")


@pytest.fixture
def finished(tiny_data, tmp_path) -> RunDir:
    cfg = make_config(
        overrides={
            "data": str(tiny_data),
            "out": str(tmp_path / "run"),
            "image_size": 24,
            "batch_size": 16,
            "epochs": 1,
            "test_subsets": "RGB,R,GB",
        }
    )
    return RunDir(train(cfg))


def test_the_final_test_keeps_one_bit_per_image_that_add_up_to_its_accuracy(finished):
    report = finished.test()
    assert set(report["test_correct"]) == set(report["results"]) == {"RGB", "R", "GB"}
    correct = evaluate.test_correct(finished)
    for s, r in report["results"].items():
        assert len(correct[s]) == r["n"] == report["n"]
        assert correct[s].mean() == pytest.approx(r["accuracy"])


def test_a_run_tested_without_them_is_scored_again_to_the_same_bits(finished, monkeypatch):
    stored = evaluate.test_correct(finished)
    test = json.loads((finished / "eval-test.json").read_text())
    del test["test_correct"]
    (finished / "eval-test.json").write_text(json.dumps(test))
    calls = []
    real = evaluate.correct_per_image
    monkeypatch.setattr(evaluate, "correct_per_image", lambda *a: calls.append(a) or real(*a))
    again = evaluate.test_correct(finished)
    assert len(calls) == 1 and calls[0][1].batch_size == 16  # one pass, at the test's batch size
    assert list(again) == list(stored)
    for s in stored:
        assert again[s].tolist() == stored[s].tolist()


def test_an_unfinished_run_is_an_error_naming_its_file(finished):
    (finished / "eval-test.json").unlink()
    with pytest.raises(DataError, match="eval-test.json"):
        evaluate.test_correct(finished)
