"""The fit loop: in-memory uint8 batches, batch augmentation, mixed precision, stages, callbacks, resume, DDP."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ferkit.config import ModelConfig, RunConfig, StageConfig, load_config, to_dict
from ferkit.errors import FerkitError, UnknownNameError
from ferkit.fileio import atomic_write, check_out_dir
from ferkit.train import distributed as dist
from ferkit.train.augment import BatchAugment, eval_transform, resolve
from ferkit.train.callbacks import CSVLogger, Callback, EarlyStopping, ModelCheckpoint, TensorBoard, monitor_mode
from ferkit.device import native_bf16, resolve_device
from ferkit.models.checkpoint import BEST, CONFIG_FILE, RESUME_FILE, save_checkpoint
from ferkit.train.checkpoint import load_state, save_state
from ferkit.train.data import RunData, prepare_data
from ferkit.train.losses import balanced_class_weights, sample_weights, soft_cross_entropy
from ferkit.train.prior import class_prior
from ferkit.train.optim import build_optimizer, build_schedule, optimizer, schedule, schedule_state

log = logging.getLogger(__name__)
EVAL_BATCH = 256


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    choices = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name == "auto":
        if native_bf16(device):
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else None
    if name not in choices:
        raise UnknownNameError(f"unknown precision {name!r}; choose one of: auto, {', '.join(choices)}")
    if name == "fp16" and device.type != "cuda":
        raise FerkitError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    if name == "bf16" and not native_bf16(device):
        log.warning("this %s has no native bf16: it is emulated and far slower than fp32 (precision auto picks "
                    "fp32 here)", device.type)
    return choices[name]


def resolve_compile(setting: bool | str, device: torch.device) -> bool:
    """train.compile, with auto meaning on CUDA GPUs only: on CPUs compiling fernet-sized models stalls the first
    epoch for minutes and did not train faster (README, Training speed)."""
    return setting is True or (setting == "auto" and device.type == "cuda")


def stages_of(cfg: RunConfig) -> list[StageConfig]:
    if cfg.train.stages:
        return cfg.train.stages
    return [StageConfig(epochs=cfg.train.epochs, trainable=cfg.model.trainable, lr=None)]


def confusion_metrics(cm: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1 from a confusion matrix (rows true, columns predicted)."""
    tp = np.diag(cm).astype(float)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # 0 only for a class with neither faces nor answers: its F1 is 0
    f1 = 2 * tp / np.maximum(denom, 1)
    return {"accuracy": float(tp.sum() / max(1, cm.sum())), "macro_f1": float(f1.mean())}


class Trainer:
    """Trains one run described by a `RunConfig` into ``run_dir``."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, progress: bool = False,
                 callbacks: list[Callback] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.log = log
        self.ctx = dist.setup()
        self.device = self.ctx.device or resolve_device(cfg.train.device)
        self.amp_dtype = resolve_precision(cfg.train.precision, self.device)
        self.mode = monitor_mode(cfg.train.monitor)
        self.stages = stages_of(cfg)
        self.stop_stage = False

        # Names first: a mistyped one is reported before minutes of decoding.
        from ferkit.models import get_spec

        get_spec(cfg.model.name)
        optimizer(cfg.optim.name)
        if cfg.model.init:
            self._check_init(cfg.model)
        self.per_batch = schedule(cfg.schedule.name).per_batch  # steps after every batch, else once per epoch

        torch.manual_seed(cfg.train.seed)
        self.data: RunData = prepare_data(cfg.data, cfg.train.seed, self.run_dir if self.ctx.is_main else None,
                                          progress and self.ctx.is_main)
        self.classes = self.data.train.classes
        self.aug_cfg = resolve(cfg.augment)
        self.input_size = self.aug_cfg.crop or cfg.data.size
        self.model, self.model_kwargs = self._build_model()
        self.augment = BatchAugment(self.aug_cfg, cfg.data.size, len(self.classes))

        # On a GPU the whole uint8 dataset lives in its memory (FER-2013 is 66 MB) and is augmented there.
        data_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        t = self.data.train
        self.x_train = torch.from_numpy(t.images).unsqueeze(1).to(data_device)  # (N, 1, S, S) uint8
        self.y_train = torch.from_numpy(t.labels if t.soft is None else t.soft).to(data_device)
        v = self.data.val
        self.x_val = torch.from_numpy(v.images).unsqueeze(1).to(data_device)
        self.y_val = torch.from_numpy(v.labels).to(data_device)
        n_cls = len(self.classes)
        self.class_weights = None
        if cfg.train.class_weights == "balanced":
            self.class_weights = torch.tensor(balanced_class_weights(t.labels, n_cls), dtype=torch.float32,
                                              device=self.device)
        elif cfg.train.class_weights != "none":
            raise UnknownNameError(f"unknown train.class_weights {cfg.train.class_weights!r}; choose none or balanced")
        # Logit-adjusted loss (Menon et al. 2021): the loss sees logits + tau * log(prior), so the model's own
        # logits learn the answer of a class-balanced world to the extent tau.
        self.logit_offset = None
        if cfg.train.logit_adjust:
            self.logit_offset = cfg.train.logit_adjust * torch.log(
                torch.as_tensor(class_prior(t), dtype=torch.float32, device=self.device))
        if cfg.train.sampler not in ("random", "weighted"):
            raise UnknownNameError(f"unknown train.sampler {cfg.train.sampler!r}; choose random or weighted")
        self.sample_w = torch.from_numpy(sample_weights(t.labels, n_cls)).double()

        self.teachers = self._load_teachers()

        self.callbacks: list[Callback] = [ModelCheckpoint(self.run_dir, cfg.train.monitor),
                                          CSVLogger(self.run_dir / "metrics.csv")]
        if cfg.train.early_stopping:
            self.callbacks.append(EarlyStopping(cfg.train.monitor, cfg.train.early_stopping, cfg.schedule.min_delta))
        if cfg.train.tensorboard and self.ctx.is_main:
            self.callbacks.append(TensorBoard(self.run_dir / "tensorboard"))
        self.callbacks += callbacks or []
        if not self.ctx.is_main:  # only rank 0 writes files
            self.callbacks = [c for c in self.callbacks if isinstance(c, EarlyStopping)]

        self.epoch = 0  # finished epochs, over all stages
        self.stage = 0
        self.stage_epoch = 0  # finished epochs of the current stage
        self.elapsed = 0.0
        self.optimizer = self.scheduler = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # The configured batch size, or the whole shard when it holds fewer images (drop_last otherwise).
        self.batch_size = max(1, min(cfg.train.batch_size, len(self.x_train) // self.ctx.world_size))
        self.total_epochs = sum(s.epochs for s in self.stages)
        self.compiles = resolve_compile(cfg.train.compile, self.device)

    # ---- model -------------------------------------------------------------------------------------------------

    def _build_model(self) -> tuple[torch.nn.Module, dict]:
        from ferkit.models import create_model, get_spec

        m = self.cfg.model
        kwargs = dict(m.kwargs)
        if "input_size" not in kwargs and "input_size" in get_spec(m.name).kwargs:
            kwargs["input_size"] = self.input_size
        model = create_model(m.name, num_classes=len(self.classes), pretrained=m.pretrained,
                             pretrained_file=m.pretrained_file, **kwargs)
        if model.input_size != self.input_size:
            raise FerkitError(
                f"model {m.name} takes {model.input_size}px faces but the data gives {self.input_size}px "
                f"(data.size {self.cfg.data.size}, augment.crop {self.aug_cfg.crop}); change one of them"
            )
        if m.init:
            self._start_from(model, m.init)
        model = model.to(self.device)
        if self.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, kwargs

    @staticmethod
    def _check_init(m: ModelConfig) -> None:
        """What ``model.init`` names can be told from its header, before the data is read."""
        from ferkit.models.checkpoint import read_meta

        if m.pretrained or m.pretrained_file:
            raise FerkitError("model.init and model.pretrained / pretrained_file both give starting weights; "
                              "choose one")
        architecture = read_meta(m.init)["architecture"]
        if architecture != m.name:
            raise FerkitError(f"model.init {m.init} is a {architecture}; this run trains a {m.name}")

    def _start_from(self, model: torch.nn.Module, spec: str) -> None:
        """Load a trained ferkit model's weights (``model.init``) into this run's model: fine-tuning."""
        from ferkit.models.checkpoint import load_checkpoint

        m = self.cfg.model
        source, meta = load_checkpoint(spec)
        if list(meta["labels"]) != list(self.classes):
            raise FerkitError(f"model.init {spec} answers {', '.join(meta['labels'])}; this run's data has "
                              f"{', '.join(self.classes)}: start from a model of the same emotions")
        theirs, ours = source.state_dict(), model.state_dict()
        wrong = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
        if wrong:
            raise FerkitError(f"model.init {spec} does not fit this run's {m.name} ({wrong[0]} differs): give "
                              f"model.kwargs as it was trained with ({meta.get('kwargs', {})})")
        model.load_state_dict(theirs)

    def _load_teachers(self) -> list[tuple[torch.nn.Module, torch.Tensor]]:
        """Each teacher model and the column of its output that holds each of this run's classes."""
        from ferkit.models.predict import ensemble_orders
        from ferkit.models.checkpoint import load_checkpoint, resolve_checkpoint

        t = self.cfg.train
        if not t.teacher:
            return []
        teachers = []
        for spec in t.teacher:
            model, meta = load_checkpoint(resolve_checkpoint(spec), self.device)
            size = int(meta["input"]["size"])
            if size != self.input_size or int(meta["input"]["face_size"]) != self.cfg.data.size:
                raise FerkitError(f"teacher {spec} takes {size}px views of {meta['input']['face_size']}px faces; "
                                  f"this run trains on {self.input_size}px views of {self.cfg.data.size}px faces")
            order = ensemble_orders([list(self.classes), meta["labels"]], ["this run", f"teacher {spec}"])[1]
            if self.cfg.train.channels_last:
                model = model.to(memory_format=torch.channels_last)
            teachers.append((model, torch.as_tensor(order, device=self.device)))
        return teachers

    def _distill(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The target mixed with the teachers' mean probabilities on the same augmented batch."""
        with torch.no_grad(), self._autocast():
            probs = sum(m(x).float().softmax(1)[:, order] for m, order in self.teachers) / len(self.teachers)
        a = self.cfg.train.distill
        return (1 - a) * y + a * probs

    def _forward_model(self) -> torch.nn.Module:
        model = self.model
        if self.ctx.world_size > 1:
            model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        if self.compiles:
            self.log.info("compiling the model with torch.compile (the first batches are slow)")
            model = torch.compile(model)
        return model

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    def model_meta(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "architecture": self.cfg.model.name,
            "kwargs": self.model_kwargs,
            "labels": list(self.classes),
            "input": {"face_size": self.cfg.data.size, "crop": self.aug_cfg.crop or None,
                      "size": self.input_size, "channels": 1, "range": [0, 1]},
            "normalization": {"mean": list(self.model.mean), "std": list(self.model.std)},
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "metrics": metrics,
            "dataset": self.data_summary(),
            "config": to_dict(self.cfg),
        }

    def data_summary(self) -> dict[str, Any]:
        ds = self.data.dataset
        return {"location": ds.location, "format": ds.format, "train": len(self.data.train),
                "val": len(self.data.val), "val_split": self.data.val.split, "excluded": ds.excluded,
                "leaks_excluded": ds.leaks_excluded, "leaks_kept": ds.leaks_kept,
                "extra_labels_matched": self.data.extra_matched}

    def save_model(self, path: Path, metrics: dict[str, Any]) -> None:
        save_checkpoint(path, self.model, self.model_meta(metrics))

    # ---- stages ------------------------------------------------------------------------------------------------

    def start_stage(self, index: int) -> None:
        """Set up stage ``index``: which parameters train, the optimizer and the schedule (``fit`` calls it)."""
        from ferkit.models import param_groups, set_trainable

        stage = self.stages[index]
        set_trainable(self.model, stage.trainable)
        lr = stage.lr if stage.lr is not None else self.cfg.optim.lr
        groups = param_groups(self.model, lr, self.cfg.optim.weight_decay, self.cfg.optim.backbone_lr_mult)
        if not groups:
            raise FerkitError(f"stage {index + 1}: trainable={stage.trainable!r} leaves nothing to train")
        self.optimizer = build_optimizer(groups, self.cfg.optim)
        self.scheduler = build_schedule(self.optimizer, self.cfg.schedule, stage.epochs, self.steps_per_epoch(),
                                        self.mode)
        self.forward_model = self._forward_model()

    def steps_per_epoch(self) -> int:
        steps = len(self.x_train) // self.ctx.world_size // self.batch_size
        return min(steps, self.cfg.train.max_batches) if self.cfg.train.max_batches else steps

    # ---- epochs ------------------------------------------------------------------------------------------------

    def _epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.x_train)
        if self.cfg.train.sampler == "weighted":
            order = torch.multinomial(self.sample_w, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        per_rank = n // self.ctx.world_size
        return order[self.ctx.rank * per_rank:(self.ctx.rank + 1) * per_rank]

    def train_epoch(self, max_batches: int | None = None) -> dict[str, float]:
        """One epoch of the current stage (or its first ``max_batches`` batches): loss, accuracy, images seen,
        images/s and the share of the time spent preparing batches."""
        from ferkit.models import train_mode

        cfg = self.cfg.train
        # Data order and augmentation depend only on (seed, epoch): a resumed run sees the same batches.
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch)
        order = self._epoch_order(gen)
        steps = self.steps_per_epoch()
        steps = min(steps, max_batches) if max_batches else steps
        batches = order[: steps * self.batch_size].view(steps, self.batch_size)
        train_mode(self.model)
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        data_time = 0.0
        start = time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{self.total_epochs}", unit="batch",
                   disable=not (self.progress and self.ctx.is_main), leave=False, dynamic_ncols=True)
        for step, idx in enumerate(bar):
            t0 = time.perf_counter()
            x, y = self.augment(self.x_train[idx], self.y_train[idx], gen)
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            data_time += time.perf_counter() - t0
            if self.teachers:
                y = self._distill(x, y)
            with self._autocast():
                logits = self.forward_model(x)
            adjusted = logits.float() if self.logit_offset is None else logits.float() + self.logit_offset
            loss = soft_cross_entropy(adjusted, y, self.class_weights, cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise FerkitError(f"the loss became {loss.item()} at epoch {self.epoch + 1}, batch {step + 1}; "
                                  "lower optim.lr or use train.precision=fp32")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None and self.per_batch:
                self.scheduler.step()
            total_loss += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y.argmax(1)).sum()
            seen += len(idx)
            if self.progress and step % 10 == 0:
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}", img_s=f"{seen / elapsed:.0f}")
        elapsed = time.perf_counter() - start
        stats = dist.all_sum(torch.stack([total_loss, correct, torch.tensor(float(seen), device=self.device)]))
        return {
            "train_loss": float(stats[0] / stats[2]),
            "train_accuracy": float(stats[1] / stats[2]),
            "images": seen * self.ctx.world_size,
            "images_per_s": seen * self.ctx.world_size / elapsed,
            "data_share": data_time / elapsed,
        }

    def validate(self) -> dict[str, float]:
        self.model.eval()
        n = len(self.x_val)
        rows = torch.arange(n)[self.ctx.rank::self.ctx.world_size]
        k = len(self.classes)
        cm = torch.zeros(k, k, dtype=torch.float64, device=self.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for idx in rows.split(EVAL_BATCH):
            x = self._to_device(eval_transform(self.aug_cfg, self.x_val[idx]))
            y = self.y_val[idx].to(self.device)
            with torch.no_grad(), self._autocast():
                logits = self.model(x)
            loss_sum += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
            cm += torch.bincount(y * k + logits.argmax(1), minlength=k * k).view(k, k).double()
        cm = dist.all_sum(cm)
        loss_sum = dist.all_sum(loss_sum)
        m = confusion_metrics(cm.cpu().numpy())
        return {"val_loss": float(loss_sum / n), "val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"]}

    def fit(self) -> dict[str, Any]:
        """Train every stage (continuing a resumed run where it stopped); returns the run summary."""
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.run_dir / CONFIG_FILE, yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        resumed = self.optimizer is not None
        while self.stage < len(self.stages):
            if not resumed:
                self.start_stage(self.stage)
                self.stop_stage = False
                for c in self.callbacks:
                    c.on_stage_start(self, self.stage)
            resumed = False
            stage = self.stages[self.stage]
            while self.stage_epoch < stage.epochs and not self.stop_stage:
                t0 = time.perf_counter()
                metrics = {"epoch": self.epoch + 1, "stage": self.stage + 1,
                           "lr": self.optimizer.param_groups[0]["lr"]}
                metrics.update(self.train_epoch())
                metrics.update(self.validate())
                metrics["epoch_time_s"] = time.perf_counter() - t0
                self.elapsed += metrics["epoch_time_s"]
                if self.scheduler is not None and self.cfg.schedule.name == "plateau":
                    self.scheduler.step(metrics[self.cfg.train.monitor])
                elif self.scheduler is not None and not self.per_batch:
                    self.scheduler.step()
                self.epoch += 1
                self.stage_epoch += 1
                for c in self.callbacks:
                    c.on_epoch_end(self, metrics)
                if self.ctx.is_main:
                    save_state(self.run_dir / RESUME_FILE, self.state_dict())
            self.stage += 1
            self.stage_epoch = 0
        for c in self.callbacks:
            c.on_train_end(self)
        best_file = self.run_dir / f"{BEST}.safetensors"
        if self.ctx.is_main and self.cfg.train.restore_best and best_file.exists():
            self.model.load_state_dict(load_file(str(best_file), device=str(self.device)))
        summary = self.summary()
        if self.ctx.is_main:
            atomic_write(self.run_dir / "summary.yaml", yaml.safe_dump(summary, sort_keys=False))
        dist.barrier()
        return summary

    def summary(self) -> dict[str, Any]:
        ckpt = next(c for c in self.callbacks if isinstance(c, ModelCheckpoint)) if self.ctx.is_main else None
        rows = next((c.rows for c in self.callbacks if isinstance(c, CSVLogger)), [])
        best = next((r for r in rows if ckpt and r["epoch"] == ckpt.best_epoch), rows[-1] if rows else {})
        return {
            "run_dir": str(self.run_dir),
            "model": self.cfg.model.name,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "epochs": self.epoch,
            "best_epoch": ckpt.best_epoch if ckpt else None,
            "monitor": self.cfg.train.monitor,
            "best": {k: v for k, v in best.items() if k.startswith(("val_", "train_"))},
            "train_time_s": round(self.elapsed, 1),
            "data": self.data_summary(),
            "best_checkpoint": str(self.run_dir / f"{BEST}.safetensors"),
        }

    # ---- resume ------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "stage": self.stage,
            "stage_epoch": self.stage_epoch,
            "stop_stage": self.stop_stage,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": schedule_state(self.scheduler),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "callbacks": {type(c).__name__: c.state_dict() for c in self.callbacks},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.stage, self.stage_epoch = state["epoch"], state["stage"], state["stage_epoch"]
        self.stop_stage, self.elapsed = state["stop_stage"], state["elapsed"]
        self.model.load_state_dict(state["model"])
        for c in self.callbacks:  # by class, so a resume may bring other callbacks (a printer, say)
            if type(c).__name__ in state["callbacks"]:
                c.load_state_dict(state["callbacks"][type(c).__name__])
        # The saved stage's optimizer and schedule; when the saved epoch ended the stage, fit goes on to the next
        # one, which starts afresh after the callbacks' saved state.
        self.start_stage(self.stage)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def train(cfg: RunConfig, run_dir: str | Path, progress: bool = False,
          callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train a new run into ``run_dir`` (which must not hold another run)."""
    run_dir = check_out_dir(run_dir)
    if (run_dir / RESUME_FILE).exists():
        raise FerkitError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick a new --out")
    return Trainer(cfg, run_dir, progress, callbacks).fit()


def resume(run_dir: str | Path, progress: bool = False, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Continue a run exactly where it stopped (after a crash or kill too)."""
    run_dir = Path(run_dir)
    state_file = run_dir / RESUME_FILE
    if not state_file.exists():
        raise FerkitError(f"{run_dir}: nothing to resume (no {state_file.name}); start it with ferkit train")
    cfg = load_config(run_dir / CONFIG_FILE)
    trainer = Trainer(cfg, run_dir, progress, callbacks)
    trainer.load_state_dict(load_state(state_file))
    return trainer.fit()
