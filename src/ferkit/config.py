"""Typed run configuration: dataclasses filled from YAML, then from ``--section.key value`` overrides.

Unknown keys and wrong types fail with the list of valid keys; the resolved config is saved with every run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferkit.errors import InputError

INPUT_SIZE = 48  # FER-2013's native face side: what datasets are stored at and models take unless told otherwise


class ConfigError(InputError):
    """A recipe or override that does not fit the config schema."""


@dataclass
class DataConfig:
    path: str = ""  # dataset folder, .zip or .csv (the CLI's --data)
    size: int = INPUT_SIZE  # faces are stored at size x size gray
    classes: list[str] | None = None  # output class order; default: canonical order of the remaining classes
    drop: list[str] = field(default_factory=list)  # classes to leave out, e.g. [disgust]
    rename: dict[str, str] = field(default_factory=dict)  # e.g. {anger: angry}; several to one merges classes
    val_split: str = "val"  # split used for validation and model selection ("test" = PublicTest for Kaggle FER)
    val_fraction: float = 0.1  # when the data has no "val" split: stratified fraction split off train
    exclude: Any = None  # true: leave out files `ferkit data clean` flags; or a flagged.csv path
    keep_leaks: bool = False  # train on training copies of evaluation images (scores on those are then not clean)
    soft_labels: bool = False  # train on FER+ vote distributions instead of majority labels
    extra_labels: str | None = None  # a second labelling of the same training faces (e.g. fer2013.zip for FER+)
    extra_weight: float = 0.2  # its weight in the training target: (1 - w) * labels or votes + w * its label
    limit_per_class: int | None = None  # at most this many images per class and split (quick runs)
    cache_dir: str | None = None


@dataclass
class ModelConfig:
    name: str = "fernet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False  # ImageNet weights from the hub or its local cache
    pretrained_file: str | None = None  # or from a local .safetensors / state-dict file
    init: str | None = None  # start from a ferkit model of the same architecture and emotions (name, run or file)
    trainable: str = "all"  # all | head | last_layers:N | last_blocks:N | modules:a,b


@dataclass
class AugmentConfig:
    preset: str = "none"  # named set of the fields below (see ferkit.train.augment.PRESETS)
    rotation: float | None = None  # degrees, uniform in [-r, r]
    shift: float | None = None  # fraction of the side, both axes
    shear: float | None = None  # degrees, as Keras' shear_range
    zoom: float | None = None  # scale uniform in [1 - z, 1 + z]
    hflip: bool | None = None
    brightness: float | None = None  # factor uniform in [1 - b, 1 + b]
    fill: str | None = None  # nearest | constant
    crop: int | None = None  # random crop to crop x crop in training, centre crop in evaluation
    trivial: bool | None = None  # TrivialAugmentWide
    erasing: float | None = None  # probability of random erasing per image
    mixup: float | None = None  # Beta(alpha, alpha) mixup; 0 = off
    cutmix: float | None = None  # Beta(alpha, alpha) cutmix; 0 = off
    # What detectors and real photos do to a face (``fer_robust``):
    scale: list[float] | None = None  # framing: window side / face side, log-uniform in [lo, hi] (1 = as trained)
    aspect: float | None = None  # framing: width / height factor, log-uniform in [1 / (1 + a), 1 + a]
    blur: float | None = None  # probability of a blur: Gaussian, or down- and up-scaling
    jpeg: float | None = None  # probability of JPEG re-compression at a quality in [20, 90]
    gamma: float | None = None  # gamma log-uniform in [1 / (1 + g), 1 + g]
    contrast: float | None = None  # factor uniform in [1 - c, 1 + c] about each image's mean
    noise: float | None = None  # Gaussian noise with a standard deviation uniform in [0, noise] (of the [0, 1] range)
    equalize: float | None = None  # probability of histogram equalization (any monotone tone curve looks the same)


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    backbone_lr_mult: float = 1.0  # learning rate of the pretrained body relative to the head


@dataclass
class ScheduleConfig:
    name: str = "none"  # none | plateau | onecycle | cosine | step
    factor: float = 0.1  # plateau, step
    patience: int = 5  # plateau
    min_delta: float = 1e-4  # plateau
    min_lr: float = 0.0  # plateau, cosine
    warmup_epochs: float = 0.0  # cosine
    step_size: int = 10  # step
    pct_start: float = 0.3  # onecycle


@dataclass
class StageConfig:
    """One stage of a multi-stage run (feature extraction, then fine-tuning, ...)."""

    epochs: int = 1
    trainable: str = "all"
    lr: float | None = None  # default: optim.lr


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    seed: int = 0
    class_weights: str = "none"  # none | balanced
    sampler: str = "random"  # random | weighted (class-balanced sampling)
    label_smoothing: float = 0.0
    logit_adjust: float = 0.0  # tau of the logit-adjusted loss: trains on logits + tau * log(training prior)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 on CPU and recent GPUs)
    compile: bool | str = "auto"  # auto (torch.compile on CUDA GPUs only) | true | false
    channels_last: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    monitor: str = "val_accuracy"  # val_accuracy | val_loss | val_macro_f1
    early_stopping: int | None = None  # patience in epochs; None = off
    restore_best: bool = True  # end with the best weights when early stopping is on
    stages: list[StageConfig] = field(default_factory=list)  # overrides epochs / model.trainable when given
    teacher: list[str] = field(default_factory=list)  # checkpoints / runs whose mean prediction is distilled
    distill: float = 0.5  # weight of the teachers' probabilities in the target (the rest: labels or votes)
    max_batches: int | None = None  # stop each epoch after this many batches (smoke tests)
    tensorboard: bool = False


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown key {path!r}; valid keys{' of ' + where if where else ''}: {', '.join(names)}")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, path)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {_coerce(args[0], k, path): _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected text, got {value!r}")
    raise ConfigError(f"{path}: unsupported type {tp}")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe (or start from defaults) and apply ``section.key=value`` overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file; see configs/ for recipes")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file; a recipe is YAML text, see configs/") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if data is None:
            raise ConfigError(f"{path}: the recipe is empty; start from one in configs/")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of sections (data:, model:, train:, ...), "
                              f"not a {type(data).__name__}; see configs/")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=5")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: {raw!r} is not a valid value ({str(e).splitlines()[0]}); quote "
                              "text with special characters") from None
    return check_config(from_dict(RunConfig, data))


def _check(path: str, value: float | int | None, low: float, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> None:
    """``value`` (None allowed) must be finite and within [low, high] (open ends where asked)."""
    if value is None:
        return
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
        def num(v: float) -> str:
            return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"

        lo = f"{'above' if low_open else 'at least'} {num(low)}"
        hi = "" if high == math.inf else f" and {'below' if high_open else 'at most'} {num(high)}"
        raise ConfigError(f"{path} is {value!r}; it must be {lo}{hi}")


def check_config(cfg: RunConfig) -> RunConfig:
    """Values the types allow but training cannot use: counts below 1, rates out of range, NaN and infinity."""
    d, o, s, t = cfg.data, cfg.optim, cfg.schedule, cfg.train
    _check("data.size", d.size, 8, 1024)
    _check("data.val_fraction", d.val_fraction, 0, 1, low_open=True, high_open=True)
    _check("data.limit_per_class", d.limit_per_class, 1)
    _check("data.extra_weight", d.extra_weight, 0, 1, low_open=True)
    _check("optim.lr", o.lr, 0, 10, low_open=True)
    _check("optim.weight_decay", o.weight_decay, 0, 1)
    _check("optim.momentum", o.momentum, 0, 1, high_open=True)
    _check("optim.backbone_lr_mult", o.backbone_lr_mult, 0, 100)
    _check("schedule.factor", s.factor, 0, 1, low_open=True, high_open=True)
    _check("schedule.patience", s.patience, 0)
    _check("schedule.min_delta", s.min_delta, 0)
    _check("schedule.min_lr", s.min_lr, 0)
    _check("schedule.warmup_epochs", s.warmup_epochs, 0)
    _check("schedule.step_size", s.step_size, 1)
    _check("schedule.pct_start", s.pct_start, 0, 1, low_open=True, high_open=True)
    _check("train.epochs", t.epochs, 1, 100_000)
    _check("train.batch_size", t.batch_size, 1, 1_000_000)
    _check("train.label_smoothing", t.label_smoothing, 0, 1, high_open=True)
    _check("train.logit_adjust", t.logit_adjust, 0, 2)
    _check("train.early_stopping", t.early_stopping, 0)  # 0 or None: off
    _check("train.max_batches", t.max_batches, 1)
    _check("train.distill", t.distill, 0, 1, low_open=True)
    if isinstance(t.compile, str) and t.compile != "auto":
        raise ConfigError(f"train.compile is {t.compile!r}; use true, false or auto")
    for i, stage in enumerate(t.stages):
        _check(f"train.stages[{i}].epochs", stage.epochs, 1, 100_000)
        _check(f"train.stages[{i}].lr", stage.lr, 0, 10, low_open=True)
    return cfg


def set_epochs(cfg: RunConfig, epochs: int) -> RunConfig:
    """``train.epochs = epochs``; with stages, every stage is capped at that many epochs (a quick run of a recipe)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a whole number of at least 1, got {epochs!r}")
    cfg.train.epochs = epochs
    for stage in cfg.train.stages:
        stage.epochs = min(stage.epochs, epochs)
    return cfg
