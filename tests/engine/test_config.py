"""Training config: YAML file, key=value overrides, validation errors that name the key."""

import re

import pytest
import yaml

from prismlab.cli import main
from prismlab.engine.config import TrainConfig, make_config
from prismlab.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_without_file_or_overrides():
    assert make_config() == TrainConfig()


def test_yaml_then_overrides_win(tmp_path):
    cfg = make_config(
        write(tmp_path, "model: resnet34\nepochs: 7\nlr: 0.05\naugment: false\n"),
        ["epochs=3", "batch_size=16", "optimizer=adamw"],
    )
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.augment) == ("resnet34", 3, 0.05, False)
    assert (cfg.batch_size, cfg.optimizer) == (16, "adamw")
    assert isinstance(cfg.lr, float) and isinstance(cfg.epochs, int)


def test_override_values_are_typed_like_the_field():
    cfg = make_config(overrides=["lr=1e-3", "deterministic=true", "seed=5", "val_subsets=RGB,L", "epochs=4.0"])
    assert cfg.lr == 1e-3 and cfg.deterministic is True and cfg.seed == 5 and cfg.epochs == 4
    assert cfg.val_subsets == "RGB,L"


def test_nested_model_kw_override_merges_with_yaml(tmp_path):
    cfg = make_config(write(tmp_path, "model_kw:\n  small_input: true\n"), ["model_kw.adapter=channelset"])
    assert cfg.model_kw == {"small_input": True, "adapter": "channelset"}


def test_dict_overrides():
    assert make_config(overrides={"epochs": 2, "model_kw.adapter": "sigmoid"}).model_kw == {"adapter": "sigmoid"}


@pytest.mark.parametrize(
    "override, key",
    [
        ("epochs=-1", "epochs"),
        ("epochs=0", "epochs"),
        ("batch_size=2.5", "batch_size"),
        ("lr=abc", "lr"),
        ("lr=0", "lr"),
        ("augment=maybe", "augment"),
        ("model_kw=adapter", "model_kw"),
        ("optimizer=rmsprop", "optimizer"),
        ("channel_sampling=fixed:RGBA", "channel sampling"),
        ("val_subsets=RGBX", "RGBX"),
        ("no_such_key=1", "no_such_key"),
        ("train_split=", "train_split is empty"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        make_config(overrides=[override])


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="epochs3"):
        make_config(overrides=["epochs3"])


def test_unknown_key_in_yaml_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="lrr"):
        make_config(write(tmp_path, "lrr: 0.1\n"))


def test_yaml_python_tags_are_refused(tmp_path):
    # safe_load refuses to build Python objects: a config file can never run code.
    marker = tmp_path / "ran"
    cfg = write(tmp_path, f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="cfg.yaml"):
        make_config(cfg)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="cfg.yaml"):
        make_config(write(tmp_path, "model_kw: !!python/object:collections.OrderedDict {}\n"))


@pytest.mark.parametrize("text", ["- a\n- b\n", "epochs: [1\n"])
def test_yaml_that_is_not_a_mapping_is_an_error(tmp_path, text):
    with pytest.raises(ConfigError, match="cfg.yaml"):
        make_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        make_config(tmp_path / "nope.yaml")


def test_effective_configs_leave_out_paths_and_keys_without_effect():
    """bench reuse compares effective configs: keys without effect (and output paths) do not count."""
    from prismlab.engine.config import TrainConfig

    # Under rgb sampling subsets_per_batch has no effect, and the output folder never matters.
    assert (
        TrainConfig(subsets_per_batch=1, out="a").effective() == TrainConfig(subsets_per_batch=8, out="b").effective()
    )
    assert (
        TrainConfig(channel_sampling="hcs", subsets_per_batch=1).effective()
        != TrainConfig(channel_sampling="hcs", subsets_per_batch=8).effective()
    )


NAN, INF = float("nan"), float("inf")
# key -> hostile values, each refused in one line naming the key; every config key has a row.
HOSTILE_CONFIG = {
    "model": ["no_such_net", [1]],
    "model_kw": ["adapter", [1, 2]],
    "data": ["", "d\0", ["x"]],
    "train_split": ["", "t\0.txt"],
    "val_split": ["nope.txt", "v\0.txt"],
    "test_split": ["nope.txt", {"a": 1}],
    "image_size": [0, 100_000, NAN, INF, 2.5, True, "big"],
    "epochs": [0, -1, INF, 10**400],
    "batch_size": [0, 10**9],
    "optimizer": ["rmsprop", 3],
    "lr": [0, -1, NAN, INF, "abc"],
    "momentum": [-0.1, 1.0, NAN],
    "weight_decay": [-1, INF, NAN],
    "schedule": ["linear"],
    "warmup_epochs": [-3, NAN, INF, 5],
    "label_smoothing": [1.0, -0.1, NAN],
    "augment": ["maybe", 1],
    "scale_min": [0, 1.5, NAN],
    "channel_sampling": ["fixed:RGBA", ""],
    "gray_prob": [-0.1, 2, NAN],
    "subsets_per_batch": [0, 64],
    "rgb_view": ["sometimes"],
    "view_distill": [-1, NAN, 0.5],
    "mixup_alpha": [-1, INF, NAN],
    "cutmix_alpha": [-1, INF],
    "ema_decay": [1.0, -0.5, NAN],
    "bn_recalibrate": [-1, 10**7, 1.5],
    "val_subsets": ["RGBX", ""],
    "test_subsets": ["RX"],
    "amp": ["fp16"],
    "channels_last": ["sometimes", [1]],
    "compile": [2],
    "seed": [-1, 2**32, 1.5],
    "deterministic": ["maybe"],
    "threads": [-2, 5000],
    "skip_bad": ["often"],
    "cache_dir": ["c\0", ["a"]],
    "log_indices": [3],
    "out": ["", "r\0"],
}


def test_every_config_key_has_hostile_values():
    assert set(HOSTILE_CONFIG) == set(TrainConfig().to_dict())


@pytest.mark.parametrize(
    "key, value", [(k, v) for k, vs in HOSTILE_CONFIG.items() for v in vs], ids=lambda x: repr(x)[:24]
)
def test_every_config_value_is_checked_in_one_line(key, value, tiny_data, tmp_path, capsys):
    config = {
        "data": str(tiny_data),
        "out": str(tmp_path / "r"),
        "batch_size": 16,
        "image_size": 24,
        "epochs": 1,
        "test_split": "",
        key: value,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    code = main(["train", "--config", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("prismlab: error: "), err
    assert re.search(rf"(?<![\w/.-]){key}(?![\w/.-])", err), err  # the key itself, not a path that holds it
    assert len(err) < 1000  # a hostile value is not printed whole
    assert not (tmp_path / "r").exists()
