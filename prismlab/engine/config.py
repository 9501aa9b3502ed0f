"""Training configuration: YAML (safe_load) + key=value overrides, validated into a dataclass; the text
is turned into values by engine/config_parse.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prismlab.engine.config_parse import coerce, did_you_mean, read_mapping, short, split_kv
from prismlab.errors import ConfigError


def key(default: Any, meaning: str) -> Any:
    """A config key: its default and one line of what it means (`prismlab train --help` lists them)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"meaning": meaning})
    return field(default=default, metadata={"meaning": meaning})


@dataclass
class TrainConfig:
    model: str = key("baseline_cnn", "registered model (prismlab models)")
    model_kw: dict = key({}, "the model's keyword arguments, e.g. model_kw.adapter=channelset")
    data: str = key("", "folder with the split files (train.txt, val.txt, test.txt), or an image-folder root")
    train_split: str = key("train.txt", "training split, relative to data")
    val_split: str = key("val.txt", "validation split (picks best.pt); empty for none")
    test_split: str = key("test.txt", "evaluated with best.pt on every test subset at the end; empty to skip")
    image_size: int = key(32, "side of the square images, cached and trained on")
    epochs: int = key(10, "passes over the training split")
    batch_size: int = key(
        128,
        "images per step and DDP rank; an epoch's last partial batch is left out (each "
        "epoch's order is new, so no image is left out every time)",
    )
    optimizer: str = key("sgd", "sgd (Nesterov) | adamw")
    lr: float = key(0.1, "peak learning rate")
    momentum: float = key(0.9, "SGD momentum")
    weight_decay: float = key(5e-4, "on weights of 2 or more dims (not norms, biases, embeddings)")
    schedule: str = key("cosine", "cosine (after warmup_epochs) | onecycle (warm-up over the first 30% of steps)")
    warmup_epochs: float = key(0.0, "linear warm-up before the cosine decay")
    label_smoothing: float = key(0.1, "cross-entropy label smoothing")
    augment: bool = key(True, "random resized crop and flip of training batches")
    scale_min: float = key(0.35, "random resized crop's smallest area fraction")
    channel_sampling: str = key("rgb", "training subsets: rgb | hcs (hierarchical) | fixed:<SUBSET>")
    gray_prob: float = key(0.125, "hcs: probability of the gray view L")
    subsets_per_batch: int = key(8, "hcs: each batch is split into this many chunks, each with its own subset")
    rgb_view: bool = key(False, "also train every batch's RGB view (logits of both views; twice the compute)")
    view_distill: float = key(0.0, "with rgb_view: weight of KL(RGB view || subset view), the RGB view detached")
    mixup_alpha: float = key(0.0, "mixup of each training batch with Beta(a, a) weights; 0: off")
    cutmix_alpha: float = key(
        0.0, "cutmix with Beta(a, a) box areas; 0: off; with mixup_alpha too, one of them per batch"
    )
    ema_decay: float = key(
        0.0, "validate, pick and deploy a moving average of the weights, decay per step (e.g. 0.999); 0: off"
    )
    bn_recalibrate: int = key(40, "re-estimate BatchNorm statistics at each epoch's end over this many batches")
    val_subsets: str = key("RGB", "subsets whose mean validation accuracy picks best.pt")
    test_subsets: str = key("all", "subsets of the final test")
    amp: str = key("auto", "auto (bf16 on CUDA, fp32 on CPU) | bf16 | off (see engine/precision.py)")
    channels_last: str = key(
        "auto",
        "channels-last memory format for the model and its input: auto (on CUDA and "
        "on CPUs with AVX-512; see engine/precision.py) | true | false",
    )
    compile: bool = key(False, "torch.compile the model")
    seed: int = key(0, "seed of every random stream: init, order, augmentation, subsets")
    deterministic: bool = key(False, "torch's deterministic algorithms (bit-exact reruns)")
    threads: int = key(0, "torch CPU threads; 0: torch's default")
    skip_bad: bool = key(False, "skip bad split lines and images, each listed in train.log")
    cache_dir: str = key("", "decode cache; empty: $PRISMLAB_CACHE or ~/.cache/prismlab")
    log_indices: bool = key(False, "write each rank's sample indices per epoch (for audits and the DDP test)")
    out: str = key("runs/train", "the run folder")

    def validate(self) -> "TrainConfig":
        from prismlab.channels import parse_subsets
        from prismlab.data.channels import ChannelSampler
        from prismlab.engine.precision import AMP_MODES, LAYOUTS

        if not self.train_split:
            raise ConfigError("train_split is empty: a run needs a training split")
        if not self.out:
            raise ConfigError("out is empty: a run needs a folder of its own (e.g. out=runs/train)")
        for f in dataclasses.fields(self):  # a NUL byte in a path is a ValueError deep inside os calls
            if isinstance(getattr(self, f.name), str) and "\0" in getattr(self, f.name):
                raise ConfigError(f"{f.name} must not contain a NUL byte, got {short(getattr(self, f.name))}")
        # Every number in its range (a comparison with nan is False, so nan is refused too). The upper
        # bounds keep memory bounded before anything is allocated: the decode cache holds
        # image_size**2 * 3 bytes per image, a batch batch_size images.
        for k, low, high in RANGES:
            v = getattr(self, k)
            if not low <= v <= high:
                raise ConfigError(f"{k} must be in {low}..{high}, got {v}")
        if not (0 < self.lr < float("inf")):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"warmup_epochs must be in 0..epochs ({self.epochs}), got {self.warmup_epochs}")
        if self.subsets_per_batch > self.batch_size:
            raise ConfigError(
                f"subsets_per_batch ({self.subsets_per_batch}) must not exceed batch_size ({self.batch_size})"
            )
        from prismlab.models import list_models
        from prismlab.models.registry import is_model

        if not is_model(self.model):  # before any data is decoded: a typo fails at once
            raise ConfigError(
                f"unknown model {self.model!r} (known: {', '.join(list_models())}, or tv:<name> and "
                f"timm:<name> for torchvision's and timm's{did_you_mean(self.model, list_models())})"
            )
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "onecycle"):
            raise ConfigError(f"schedule must be cosine or onecycle, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        self.channels_last = str(self.channels_last).lower()  # YAML reads true and false as booleans
        if self.channels_last not in LAYOUTS:
            raise ConfigError(f"channels_last must be one of {', '.join(LAYOUTS)}, got {self.channels_last!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.scale_min <= 1:
            raise ConfigError(f"scale_min must be in (0, 1], got {self.scale_min}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.view_distill > 0 and not self.rgb_view:
            raise ConfigError(f"view_distill needs rgb_view=true, got {self.view_distill}")
        for k, check in (
            ("channel_sampling", lambda v: ChannelSampler(v, self.gray_prob)),
            ("val_subsets", parse_subsets),
            ("test_subsets", parse_subsets),
        ):
            try:
                check(getattr(self, k))
            except ConfigError as e:
                raise ConfigError(f"{k}: {e}") from None
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


# (key, lowest, highest) for every number that has a range of its own
RANGES = (
    ("image_size", 1, 4096),
    ("epochs", 1, 100_000),
    ("batch_size", 1, 65_536),
    ("subsets_per_batch", 1, 65_536),
    ("bn_recalibrate", 0, 1_000_000),
    ("threads", 0, 4096),
    ("seed", 0, 2**32 - 1),
    ("momentum", 0.0, 0.999999),
    ("weight_decay", 0.0, 1.0),
    ("gray_prob", 0.0, 1.0),
    ("view_distill", 0.0, 1e6),
    ("mixup_alpha", 0.0, 1e6),
    ("cutmix_alpha", 0.0, 1e6),
)


# Keys a run folder of this format may lack, each off by default: a folder without one trained with
# it off, so it reads as off (engine/rundir.py). Any other missing key is refused.
ADDED_KEYS = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "ema_decay": 0.0}


def key_table() -> list[tuple[str, str, str]]:
    """(key, default as one would type it, meaning) for every config key."""
    defaults = TrainConfig().to_dict()
    return [
        (
            f.name,
            yaml.safe_dump(defaults[f.name], default_flow_style=True).strip().removesuffix("\n..."),
            f.metadata["meaning"],
        )
        for f in dataclasses.fields(TrainConfig)
    ]


def preset_path(name: str) -> Path | None:
    """prismlab/configs/<name>.yaml, the presets `--config NAME` names (ours, task1-cpu, ...), or None."""
    from importlib import resources

    p = Path(str(resources.files("prismlab").joinpath("configs", f"{name}.yaml")))
    return p if p.is_file() and "/" not in name else None


def make_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Defaults <- YAML file (or a preset's name) <- overrides ('key=value' strings or a dict;
    'model_kw.adapter=x' sets a nested key)."""
    values: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            p = preset_path(str(path)) or p
        if not p.is_file():
            from importlib import resources

            names = sorted(
                f.name[:-5]
                for f in resources.files("prismlab").joinpath("configs").iterdir()
                if f.name.endswith(".yaml") and not f.name.startswith("recipe-")
            )
            raise ConfigError(f"{path}: config file not found (presets: {', '.join(names)})")
        values.update(read_mapping(p))
    items = overrides.items() if isinstance(overrides, dict) else [split_kv(s) for s in overrides or []]
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
            raise ConfigError(f"unknown config key {k!r}{did_you_mean(k, known)}")
    cfg = TrainConfig(**{k: coerce(k, v, getattr(defaults, k)) for k, v in values.items()})
    return cfg.validate()


def keys_help() -> str:
    """The config keys for `prismlab train --help`: each with its default and meaning."""
    rows = key_table()
    width = max(len(f"{k}={d}") for k, d, _ in rows)
    return (
        "config keys (key=value after the options; a nested one with a dot, e.g. model_kw.adapter=channelset):\n"
        + "\n".join(f"  {f'{k}={d}':<{width}}  {meaning}" for k, d, meaning in rows)
    )
