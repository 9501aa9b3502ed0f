"""Training configuration: YAML (safe_load) + key=value overrides, validated into a dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prismlab.engine.precision import AMP_MODES
from prismlab.errors import ConfigError, first_line


@dataclass
class TrainConfig:
    model: str = "baseline_cnn"
    model_kw: dict = field(default_factory=dict)  # e.g. {adapter: channelset}
    data: str = ""  # folder with train.txt/val.txt/test.txt, or an image-folder root
    train_split: str = "train.txt"
    val_split: str = "val.txt"
    test_split: str = "test.txt"  # evaluated on every subset at the end; "" to skip
    image_size: int = 32
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | onecycle
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    augment: bool = True
    scale_min: float = 0.35  # random resized crop's smallest area fraction
    channel_sampling: str = "rgb"  # rgb | hcs | fixed:<SUBSET>
    gray_prob: float = 0.125
    subsets_per_batch: int = 8  # hcs: each batch is split into this many chunks, each with its own subset
    rgb_view: bool = False  # also train every batch's RGB view (logits of both views; twice the compute)
    view_distill: float = 0.0  # with rgb_view: weight of KL(RGB view || subset view), the RGB view detached
    bn_recalibrate: int = 40  # re-estimate BatchNorm statistics at each epoch's end over this many batches
    val_subsets: str = "RGB"  # subsets whose mean val accuracy picks best.pt
    test_subsets: str = "all"
    amp: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | off (see engine/precision.py)
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    threads: int = 0  # 0: torch's default
    skip_bad: bool = False
    cache_dir: str = ""
    log_indices: bool = False  # write each rank's sample indices (for audits and the DDP test)
    out: str = "runs/train"

    def validate(self) -> "TrainConfig":
        from prismlab.data.channels import ChannelSampler, parse_subsets

        if self.bn_recalibrate < 0:
            raise ConfigError(f"bn_recalibrate must be >= 0, got {self.bn_recalibrate}")
        positive = ("image_size", "epochs", "batch_size", "subsets_per_batch")
        for k in positive:
            if getattr(self, k) <= 0:
                raise ConfigError(f"{k} must be > 0, got {getattr(self, k)}")
        if not (0 < self.lr < float("inf")):  # also refuses nan
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        from prismlab.models import list_models

        if self.model not in list_models():  # before any data is decoded: a typo fails at once
            raise ConfigError(f"unknown model {self.model!r} (known: {', '.join(list_models())})")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "onecycle"):
            raise ConfigError(f"schedule must be cosine or onecycle, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if not 0 <= self.label_smoothing < 1 or not 0 < self.scale_min <= 1:
            raise ConfigError("label_smoothing must be in [0, 1) and scale_min in (0, 1]")
        if self.view_distill < 0 or (self.view_distill > 0 and not self.rgb_view):
            raise ConfigError(f"view_distill must be >= 0 and needs rgb_view=true, got {self.view_distill}")
        ChannelSampler(self.channel_sampling, self.gray_prob)
        parse_subsets(self.val_subsets)
        parse_subsets(self.test_subsets)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def effective(self) -> dict:
        """The keys that change what a run computes: where it writes, and keys with no effect
        under this sampling, are left out. Two runs with equal effective configs are the same run."""
        d = self.to_dict()
        for k in ("out", "cache_dir", "log_indices"):
            d.pop(k)
        if self.channel_sampling != "hcs":
            d.pop("subsets_per_batch")
            d.pop("gray_prob")
        return d


def _coerce(key: str, raw: Any, like: Any) -> Any:
    """Turn a YAML/CLI value into the field's type, or say which key is wrong."""
    if isinstance(raw, str) and not isinstance(like, str):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError:
            pass
    try:
        if isinstance(like, bool):
            if not isinstance(raw, bool):
                raise ValueError
            return raw
        if isinstance(like, int):
            if isinstance(raw, bool) or float(raw) != int(raw):
                raise ValueError
            return int(raw)
        if isinstance(like, float):
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if isinstance(like, dict):
            if not isinstance(raw, dict):
                raise ValueError
            return raw
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"config {key}={raw!r}: expected {type(like).__name__}") from None


def make_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Defaults <- YAML file <- overrides ('key=value' strings or a dict; 'model_kw.adapter=x' sets a nested key)."""
    values: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({first_line(e)})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of config keys")
        values.update(loaded)
    items = overrides.items() if isinstance(overrides, dict) else [_split_kv(s) for s in overrides or []]
    for k, v in items:
        *heads, last = k.split(".")
        target = values
        for h in heads:  # model_kw.adapter_kw.hidden=16 sets a nested key
            target[h] = dict(target.get(h) or {})
            target = target[h]
        target[last] = (yaml.safe_load(v) if isinstance(v, str) else v) if heads else v
    defaults = TrainConfig()
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for k in values:
        if k not in known:
            raise ConfigError(f"unknown config key {k!r}")
    cfg = TrainConfig(**{k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()})
    return cfg.validate()


def _split_kv(s: str) -> tuple[str, str]:
    if "=" not in s:
        raise ConfigError(f"override {s!r} is not key=value")
    k, v = s.split("=", 1)
    return k.strip(), v
