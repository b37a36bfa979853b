"""A PyTorch Lightning callback that pushes a checkpoint to an experiment at chosen validation
epochs, adds it as a model condition and, if asked, starts a render.

    from listening_client import Client
    from listening_client.lightning import PushCheckpoints

    push = PushCheckpoints(
        Client("http://127.0.0.1:8000", token),
        experiment=12,
        config={"architecture": "recurrent", "sample_rate": 48000, "params": {"hidden_size": 32}},
        module="net",                          # the LightningModule's attribute holding the network
        epochs=[9, 49, 199],                   # 0-based, as trainer.current_epoch counts
        label="epoch {epoch} (val {val_loss:.4f})",
        render=True,
    )
    Trainer(callbacks=[push], ...).fit(model)

The checkpoint is the project's native format (docs/formats.md): a torch file holding
``{"state_dict": ..., "config": ...}``, which the server reads with ``weights_only=True``;
``config`` names an architecture of the model runner's registry, its sample rate, knobs and
constructor ``params``, so the network's ``state_dict`` must fit that architecture exactly.
The epoch, step and validation metrics go into the config's ``metadata``.

The platform refuses new conditions while the experiment renders: a push waits for a render
still running (started by an earlier push or anyone else) before it uploads. Only the global
rank-zero process pushes. Lightning is imported from ``lightning.pytorch`` or, failing that,
``pytorch_lightning``; torch from the training environment.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch

from .client import ApiError, Client, Progress, Ref, RenderFailed, _id

NATIVE_FORMAT_VERSION = 1


def _lightning() -> ModuleType:
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("listening_client.lightning needs Lightning: pip install lightning (or pytorch-lightning)")


pl = _lightning()
#: Lightning's callback class, from whichever package provides it.
Callback: Any = pl.Callback


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics Lightning collected (``trainer.callback_metrics``) as floats."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value.detach().cpu().item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def _fill(template: str, values: Mapping[str, Any], what: str) -> str:
    try:
        return template.format(**values)
    except KeyError as exc:
        raise ValueError(
            f"{what}: {template!r} names {exc.args[0]!r}, which is neither epoch, step nor a logged metric "
            f"(logged: {', '.join(sorted(k for k in values if k not in ('epoch', 'step'))) or 'none'})"
        ) from None


class PushCheckpoints(Callback):  # type: ignore[misc]  # Lightning's class, found at run time
    """Push the network's weights at the end of chosen validation epochs.

    ``client``, ``experiment``: where to push. ``config``: the native config (``architecture``,
    ``sample_rate``, ``params``, ``knobs``; ``format_version`` 1 is added). ``module``: the
    network, as an attribute path of the LightningModule (``"net"``, ``"model.generator"``) or a
    function of it; by default the LightningModule itself. ``epochs``: the 0-based epochs to
    push (a collection, or a function of the epoch); by default every validation epoch; one
    push per epoch. ``name``, ``label``, ``display_name``: the checkpoint's name and the
    condition's label and display name, formatted with ``epoch``, ``step`` and every logged
    metric. ``knobs``: the condition's knob values. ``render``: start a render after each push;
    ``wait``: ``"each"`` waits for every render to finish before training goes on, ``"end"``
    for the last one when fitting ends. ``directory``: where the files are written (default
    ``<default_root_dir>/pushed-checkpoints``). ``strict``: an error of the platform stops
    training; with ``False`` it is a warning and lands in ``failed``.

    ``pushed`` lists what was pushed: epoch, file, the checkpoint and condition as the API
    answered, and the last render status read (``None`` without a render).
    """

    def __init__(
        self,
        client: Client,
        experiment: Ref,
        config: Mapping[str, Any],
        *,
        module: str | Callable[[Any], torch.nn.Module] | None = None,
        epochs: Iterable[int] | Callable[[int], bool] | None = None,
        name: str = "epoch{epoch}",
        label: str = "epoch {epoch}",
        display_name: str = "",
        knobs: Mapping[str, float] | None = None,
        render: bool = False,
        wait: Literal["never", "each", "end"] = "never",
        progress: Progress | bool | None = None,
        directory: str | Path | None = None,
        strict: bool = True,
    ) -> None:
        super().__init__()
        for key in ("architecture", "sample_rate"):
            if key not in config:
                raise ValueError(f"config: the native config needs {key!r} (see docs/formats.md)")
        if wait not in ("never", "each", "end"):
            raise ValueError(f"wait: 'never', 'each' or 'end', not {wait!r}")
        self.client = client
        self.experiment = _id(experiment)
        self.config = {"format_version": NATIVE_FORMAT_VERSION, **dict(config)}
        self.module = module
        self._chosen: Callable[[int], bool]
        if epochs is None:
            self._chosen = lambda epoch: True
        elif callable(epochs):
            self._chosen = epochs
        else:
            chosen = frozenset(int(e) for e in epochs)
            self._chosen = chosen.__contains__
        self.name, self.label, self.display_name = name, label, display_name
        self.knobs = dict(knobs or {})
        self.render, self.wait, self.progress = render, wait, progress
        self.directory = Path(directory) if directory is not None else None
        self.strict = strict
        self.pushed: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self._epochs_done: set[int] = set()

    # --- Lightning hooks

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or str(getattr(trainer.state, "fn", "fit")) not in ("fit", "TrainerFn.FITTING"):
            return
        epoch = int(trainer.current_epoch)
        if not trainer.is_global_zero or epoch in self._epochs_done or not self._chosen(epoch):
            return
        self._epochs_done.add(epoch)
        try:
            self.push(trainer, pl_module)
        except (ApiError, OSError) as exc:
            if self.strict:
                raise
            warnings.warn(f"checkpoint of epoch {epoch} not pushed: {exc}", stacklevel=2)
            self.failed.append({"epoch": epoch, "error": str(exc)})

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.wait == "end" and self.render and self.pushed and trainer.is_global_zero:
            try:
                self.pushed[-1]["render"] = self.client.wait_for_render(self.experiment, progress=self.progress)
            except ApiError as exc:
                if self.strict:
                    raise
                warnings.warn(f"render after the last push: {exc}", stacklevel=2)
                self.failed.append({"epoch": self.pushed[-1]["epoch"], "error": str(exc)})

    # --- the push

    def network(self, pl_module: Any) -> torch.nn.Module:
        """The network whose weights are pushed."""
        if self.module is None:
            net: Any = pl_module
        elif callable(self.module):
            net = self.module(pl_module)
        else:
            net = pl_module
            for part in self.module.split("."):
                if not hasattr(net, part):
                    raise AttributeError(f"module: {type(net).__name__} has no attribute {part!r} ({self.module!r})")
                net = getattr(net, part)
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(net).__name__}")
        return net

    def state_dict(self, pl_module: Any) -> dict[str, torch.Tensor]:
        """The network's weights on the CPU, floating point ones as float32, without the
        ``_orig_mod.`` that ``torch.compile`` puts in the names."""
        out = {}
        for key, value in self.network(pl_module).state_dict().items():
            tensor = value.detach().to("cpu")
            out[key.replace("_orig_mod.", "")] = (tensor.float() if tensor.is_floating_point() else tensor).clone()
        return out

    def save(self, trainer: Any, pl_module: Any, name: str, metrics: dict[str, float]) -> Path:
        """Write the checkpoint file; its path."""
        folder = self.directory or Path(trainer.default_root_dir) / "pushed-checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        config = dict(self.config)
        config["metadata"] = {
            **dict(config.get("metadata") or {}),
            "epoch": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "metrics": metrics,
        }
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-.') or 'checkpoint'}.pt"
        tmp = path.with_name(f".tmp-{path.name}")
        torch.save({"state_dict": self.state_dict(pl_module), "config": config}, tmp)
        tmp.replace(path)
        return path

    def push(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        """Save, upload, add the condition and (``render``) start a render, now."""
        epoch = int(trainer.current_epoch)
        metrics = _numbers(trainer.callback_metrics)
        values: dict[str, Any] = {**metrics, "epoch": epoch, "step": int(trainer.global_step)}
        name = _fill(self.name, values, "name")
        label = _fill(self.label, values, "label")
        display_name = _fill(self.display_name, values, "display_name")
        path = self.save(trainer, pl_module, name, metrics)
        self._wait_while_rendering()
        checkpoint = self.client.upload_checkpoint(self.experiment, path, name=name)
        condition = self.client.add_condition(
            self.experiment, checkpoint, label, knobs=self.knobs, display_name=display_name
        )
        record: dict[str, Any] = {
            "epoch": epoch,
            "path": path,
            "checkpoint": checkpoint,
            "condition": condition,
            "render": None,
        }
        self.pushed.append(record)
        if self.render:
            record["render"] = self.client.render(self.experiment)
            if self.wait == "each":
                record["render"] = self.client.wait_for_render(self.experiment, progress=self.progress)
        return record

    def _wait_while_rendering(self) -> None:
        """The platform takes no new condition while rendering: wait for that render to end. One
        that failed leaves the experiment editable (the next render queues its jobs again)."""
        if self.client.status(self.experiment)["status"] != "rendering":
            return
        try:
            status = self.client.wait_for_render(self.experiment, progress=self.progress)
        except RenderFailed as exc:
            warnings.warn(f"the render before this push did not finish: {exc}", stacklevel=3)
            return
        if self.pushed and self.pushed[-1]["render"] is not None:
            self.pushed[-1]["render"] = status
