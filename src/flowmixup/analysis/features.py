"""Hidden features of any ``nn.Module``, collected with forward hooks on named submodules, and the model of a
finished training run ready to collect them from.

A hidden state is named like a mix point: a key of ``model.named_modules()`` (``layer1.0``, ``features.denseblock2``)
stands for that submodule's OUTPUT, and ``"output"`` for the model's own output. The paper's Fig. 4 uses the output
of every residual block and the model output: :func:`default_points`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

OUTPUT = "output"


class AnalysisError(ValueError):
    """Bad input to the analysis (a run folder, a hidden-state name, k): one line naming it and what is allowed."""


# ----------------------------------------------------------------------------------------------------------------
# hidden-state names
# ----------------------------------------------------------------------------------------------------------------
def _is_block(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return "block" in name or "bottleneck" in name


def default_points(model: nn.Module) -> list[str]:
    """Every residual (or dense) block in forward order, then ``"output"``.

    A model with ``block_names()`` (the project's backbones) names its own blocks; otherwise the outermost
    submodules whose class name contains ``Block`` or ``Bottleneck`` (torchvision's ResNet ``BasicBlock`` /
    ``Bottleneck``, DenseNet's ``_DenseBlock``, the usual ``PreActBlock``), in registration order.
    """
    if hasattr(model, "block_names"):
        return [*model.block_names(), OUTPUT]
    found: list[str] = []
    for name, module in model.named_modules():
        if name and _is_block(module) and not any(name.startswith(f"{outer}.") for outer in found):
            found.append(name)
    if not found:
        raise AnalysisError(
            f"no residual or dense blocks recognised in {type(model).__name__}; name the hidden "
            f"states to collect (allowed: {_shown(valid_points(model))})"
        )
    return [*found, OUTPUT]


def valid_points(model: nn.Module) -> list[str]:
    return [OUTPUT] + [name for name, _ in model.named_modules() if name]


def _shown(valid: list[str]) -> str:
    top = [n for n in valid if n.count(".") <= 1]
    more = len(valid) - len(top)
    text = ", ".join(top[:40]) + (", ..." if len(top) > 40 else "")
    return text + (f" (and {more} deeper submodules by their full names)" if more else "")


def check_points(model: nn.Module, points: Sequence[str], what: str = "--points") -> list[str]:
    """``points`` checked against the model's submodule names (plus ``"output"``); one line listing the valid ones
    for an unknown name."""
    points = [p.strip() for p in points if p.strip()]
    if not points:
        raise AnalysisError(
            f"{what} is empty; name at least one hidden state (e.g. {', '.join(default_points(model)[:3])})"
        )
    modules = dict(model.named_modules())
    for p in points:
        if p != OUTPUT and (p not in modules or p == ""):
            import difflib

            valid = valid_points(model)
            close = difflib.get_close_matches(p, valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise AnalysisError(f"{what}: unknown hidden state '{p}'{hint}; allowed: {_shown(valid)}")
    if len(set(points)) != len(points):
        raise AnalysisError(f"{what} names a hidden state twice: {points}")
    return points


# ----------------------------------------------------------------------------------------------------------------
# collection
# ----------------------------------------------------------------------------------------------------------------
def _default_prepare(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.to(device)


def collect_features(
    model: nn.Module,
    loader: Iterable,
    points: Sequence[str],
    device: str | torch.device | None = None,
    max_samples: int | None = None,
    prepare: Callable[[torch.Tensor, torch.device], torch.Tensor] | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The outputs of the named submodules (``"output"``: the model's output) over ``loader``, in eval mode and
    without gradients: ``{point: float32 array (N, V)}``, each sample flattened (V = D x H x W).

    ``loader`` yields input batches, or tuples/lists whose first item is the input (a torchvision-style
    ``DataLoader`` of ``(image, label)``). ``prepare(x, device)`` turns a batch into the model's input (default:
    ``x.to(device)``). At most ``max_samples`` samples are taken (the first ones the loader yields).
    The model's training mode is restored afterwards and every hook removed.
    """
    points = check_points(model, points, what="points")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    prepare = prepare or _default_prepare
    recorder = _HiddenStates(points)
    handles = []
    was_training = model.training
    model.eval()
    taken = 0
    try:
        for p in points:
            target = model if p == OUTPUT else model.get_submodule(p)
            handles.append(target.register_forward_hook(recorder.hook_for(p)))
        with torch.no_grad():
            for x in _input_batches(loader, max_samples, progress):
                recorder.seen.clear()
                model(prepare(x, device))
                recorder.check_reached(type(model).__name__)
                taken += x.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not taken:
        raise AnalysisError("the loader yielded no samples")
    return {p: np.concatenate(recorder.chunks[p], axis=0) for p in points}


class _HiddenStates:
    """The forward hooks of :func:`collect_features`: each named output, flattened, once per forward pass."""

    def __init__(self, points: Sequence[str]):
        self.points = list(points)
        self.chunks: dict[str, list[np.ndarray]] = {p: [] for p in points}
        self.seen: dict[str, int] = {}

    def hook_for(self, name: str):
        def hook(module, args, output):
            if self.seen.get(name, 0):
                raise AnalysisError(
                    f"hidden state '{name}' is computed twice in one forward pass; name a submodule "
                    "the model calls once"
                )
            if not torch.is_tensor(output):
                raise AnalysisError(
                    f"hidden state '{name}' is a {type(output).__name__}, not a tensor; name another submodule"
                )
            self.seen[name] = 1
            self.chunks[name].append(output.detach().flatten(1).to("cpu", torch.float32, copy=True).numpy())

        return hook

    def check_reached(self, model_name: str) -> None:
        missing = [p for p in self.points if not self.seen.get(p)]
        if missing:
            raise AnalysisError(f"hidden states {missing} were never reached in the forward pass of {model_name}")


def _input_batches(loader: Iterable, max_samples: int | None, progress: bool) -> Iterator[torch.Tensor]:
    """The input of each batch (the first item of a tuple/list batch), cut so that at most ``max_samples`` come."""
    if progress:
        from ..progress import progress as show_progress

        loader = show_progress(loader, desc="batches", unit="batch", leave=False)
    taken = 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if max_samples is not None:
            if taken >= max_samples:
                return
            x = x[: max_samples - taken]
        taken += x.shape[0]
        yield x


# ----------------------------------------------------------------------------------------------------------------
# a finished training run
# ----------------------------------------------------------------------------------------------------------------
CHECKPOINT = "checkpoint.pt"


def _build_function() -> Callable[..., nn.Module]:
    """Training's own backbone builder (``build_model(cfg, in_channels, num_classes)``: ``cfg.backbone.net``
    instantiated), so the model is built exactly as it was trained."""
    from flowmixup.training.build import build_model

    return build_model


def read_checkpoint(path: Path) -> dict:
    """A run's checkpoint, read with ``weights_only=True`` (tensors and plain containers only: nothing in the file
    can run code). Must hold ``"model"`` (a state dict)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file becomes one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise AnalysisError(
            f"{path}: cannot be read as a plain checkpoint with weights_only=True ({first}); "
            "checkpoints of runs trained before flowmixup wrote plain checkpoints need retraining"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise AnalysisError(f"{path}: not a flowmixup checkpoint (no 'model' state dict)")
    return ckpt


def run_config(run_dir: Path, ckpt: dict | None = None):
    """The run's resolved config: ``<run>/config.yaml``, else the copy in its checkpoint."""
    from omegaconf import OmegaConf

    path = run_dir / "config.yaml"
    if path.is_file():
        return OmegaConf.load(path)
    if ckpt is not None and isinstance(ckpt.get("config"), dict):
        return OmegaConf.create(ckpt["config"])
    raise AnalysisError(f"{run_dir}: no config.yaml (and no config in the checkpoint); is this a training run folder?")


def _rebase_data_dir(cfg, data_dir: str) -> None:
    """Point a resolved config's data paths at ``data_dir``: ``paths.data_dir`` and every loader value under it."""
    old = str(cfg.paths.data_dir).rstrip("/")
    loader = cfg.dataset.loader
    for key in list(loader.keys()):
        value = loader[key]
        if isinstance(value, str) and (value == old or value.startswith(old + "/")):
            loader[key] = str(data_dir).rstrip("/") + value[len(old) :]
    cfg.paths.data_dir = str(data_dir)


def check_run_dir(run_dir: Path) -> Path:
    """The run's checkpoint path; one line if the folder or its checkpoint is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AnalysisError(f"run folder not found: {run_dir}")
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise AnalysisError(f"{run_dir}: no {CHECKPOINT} (not a training run folder, or its run has not saved one yet)")
    return path


def load_run(run_dir: str | Path, data_dir: str | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A finished (or interrupted) run, ready for :func:`collect_features`: ``{"model", "cfg", "data", "prepare"}``.

    The model is built by training's own builder from the run's config and given the checkpoint's weights (eval
    mode). The data are the run's dataset read through its loader (the same cache training read); ``data_dir``
    replaces the data folder the run was trained with. ``prepare`` turns a batch into model input as training does.
    """
    run_dir = Path(run_dir)
    path = check_run_dir(run_dir)
    ckpt = read_checkpoint(path)
    cfg = run_config(run_dir, ckpt)
    if data_dir is not None:
        _rebase_data_dir(cfg, data_dir)
    from flowmixup.training.build import load_data, to_input

    data = load_data(cfg)
    sample = np.asarray(data.x[np.array([0])])
    model = _build_function()(cfg, in_channels=sample.shape[1], num_classes=len(data.class_names))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise AnalysisError(
            f"{path}: its weights do not fit the model built from {run_dir / 'config.yaml'} ({first})"
        ) from None
    device = torch.device(device)
    channels_last = bool(cfg.trainer.get("channels_last", False)) and sample.ndim == 4
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return {"model": model, "cfg": cfg, "data": data, "prepare": lambda x, dev: to_input(x, dev, channels_last)}


def split_loader(data, split: str, batch_size: int = 256, max_samples: int | None = None, seed: int = 0):
    """A DataLoader over one split of a :class:`~flowmixup.data.base.LabeledArrays`, in index order; with
    ``max_samples`` below the split's size, a seeded random subset of it (still in index order)."""
    from torch.utils.data import DataLoader

    from flowmixup.data.base import ArrayDataset, batch_collate

    if split not in data.splits:
        raise AnalysisError(f"--split: unknown split '{split}'; allowed: {', '.join(data.splits)}")
    idx = np.asarray(data.splits[split])
    if max_samples is not None and max_samples < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_samples, replace=False))
    return DataLoader(
        ArrayDataset(data.x, data.y.astype(np.float32), idx),
        batch_size=batch_size,
        collate_fn=batch_collate,
        shuffle=False,
    )
