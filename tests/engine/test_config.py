"""Training config: YAML file, key=value overrides, validation errors that name the key."""

import pytest

from prismlab.engine.config import TrainConfig, make_config
from prismlab.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_without_file_or_overrides():
    assert make_config() == TrainConfig()


def test_yaml_then_overrides_win(tmp_path):
    cfg = make_config(write(tmp_path, "model: resnet34\nepochs: 7\nlr: 0.05\naugment: false\n"),
                      ["epochs=3", "batch_size=16", "optimizer=adamw"])
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


@pytest.mark.parametrize("override, key", [
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
])
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
    assert TrainConfig(subsets_per_batch=1, out="a").effective() == TrainConfig(subsets_per_batch=8, out="b").effective()
    assert TrainConfig(channel_sampling="hcs", subsets_per_batch=1).effective() != \
        TrainConfig(channel_sampling="hcs", subsets_per_batch=8).effective()
