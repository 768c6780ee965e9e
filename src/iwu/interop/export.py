"""`iwu export`: a run's members and its ensemble as files that run without iwu.

    RUN/export/<member>.onnx (or .torchscript.pt), ensemble.onnx (or .torchscript.pt), export.json

A member's file maps a normalised image batch (B, 3, H, W) (x/255 - mean)/std
with the statistics the run trained with (`iwu.data.sources.image_statistics`
of its `data.kind`: ImageNet's, or Kvasir-SEG's own) to logits (B, C, H, W); the ensemble's maps it
to the mean of the members' softmaxes, the probabilities every iwu command
uses. Files are traced at `size` x `size` with any batch size; ONNX is checked
against PyTorch with onnxruntime when it is installed, TorchScript always.

`export.json` says what a deployer needs beside the files: the class names in
output order, the normalisation (mean, std), the traced size and each file's
output. It is written before the networks, so it also marks the files as the
export's own: an export run again replaces them, while a file of the same name
that is not an export's is refused without `overwrite`.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from iwu.constants import ENSEMBLE
from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write, atomic_write_bytes, atomic_write_json
from iwu.util.output_paths import refuse_existing
from iwu.models.parts import logits_and_aux

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
TOLERANCE = 1e-4  # float32 kernels of two runtimes
MANIFEST = "export.json"


class MemberLogits(nn.Module):
    """A member whose output is a dict or tuple (torchvision, smp with a classification head) as plain logits."""

    def __init__(self, member: nn.Module):
        super().__init__()
        self.member = member

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return logits_and_aux(self.member(images))[0]


class EnsembleProbabilities(nn.Module):
    """The ensemble's prediction: the mean of its members' softmaxes."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(MemberLogits(m) for m in members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(images).float().softmax(dim=1) for m in self.members]).mean(dim=0)


def _torchscript(model: nn.Module, example: torch.Tensor) -> tuple[bytes, nn.Module]:
    with warnings.catch_warnings():  # deprecated in favour of torch.export, still what many runtimes load
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        return buffer.getvalue(), traced


def _onnx_check(path: Path, example: torch.Tensor):
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: example.numpy()})[0])


def _write(model: nn.Module, path: Path, fmt: str, example: torch.Tensor) -> float | None:
    """Write `model` to `path`; the largest difference from PyTorch on `example`, or None if not checked."""
    with torch.no_grad():
        expected = model(example)
    if fmt == "torchscript":
        data, traced = _torchscript(model, example)
        atomic_write_bytes(path, data)
        with torch.no_grad():
            got = traced(example)
    else:
        try:
            import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
        except ImportError:
            raise UserError("--format onnx needs the onnx exporter: pip install onnx onnxscript "
                            "(and onnxruntime to check the files)") from None
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(model, (example,), dynamo=True, verbose=False, input_names=["images"],
                                    output_names=["output"], dynamic_shapes=({0: batch},))
        atomic_write(path, lambda f: f.write(program.model_proto.SerializeToString()))
        got = _onnx_check(path, example)
    return None if got is None else float((got - expected).abs().max())


def _earlier_exports(folder: Path) -> set[str]:
    """The file names an earlier export into `folder` wrote (or was writing when it was stopped)."""
    try:
        return set(json.loads((folder / MANIFEST).read_text())["files"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _manifest(loaded, fmt: str, size: int, files: dict[str, Path]) -> dict:
    from iwu.data.sources import image_statistics

    mean, std = image_statistics(loaded.config.data.kind)
    return {
        "run": str(loaded.run_dir), "checkpoint": str(loaded.checkpoint), "format": fmt,
        "input": f"images (B, 3, {size}, {size}), RGB, (x / 255 - mean) / std", "mean": list(mean), "std": list(std),
        "size": size, "classes": list(loaded.module.classes),
        "outputs": {name: "probabilities (B, C, H, W), the mean of the members' softmaxes" if name == ENSEMBLE
                    else "logits (B, C, H, W)" for name in files},
        "files": {name: path.name for name, path in files.items()},
    }


def export_run(target, fmt: str = "onnx", out=None, size: int | None = None, overwrite: bool = False) -> list[Path]:
    """Export every member of a run and its ensemble, with `export.json`; returns the networks' files."""
    from iwu.inference.loading import load_models

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    loaded = load_models(target, "cpu")
    size = size or loaded.config.data.size
    folder = Path(out) if out is not None else loaded.run_dir / "export"
    models = {name: MemberLogits(m) for name, m in zip(loaded.module.names, loaded.module.members)}
    models[ENSEMBLE] = EnsembleProbabilities(loaded.module.members)
    files = {name: folder / f"{name.replace(':', '-')}{FORMATS[fmt]}" for name in models}
    ours = _earlier_exports(folder)  # none: no readable export.json, so that file is not ours either
    refuse_existing([p for p in files.values() if p.name not in ours] + ([] if ours else [folder / MANIFEST]),
                    "--out", overwrite)
    atomic_write_json(folder / MANIFEST, _manifest(loaded, fmt, size, files))
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    written = []
    for name, model in models.items():
        path = files[name]
        diff = _write(model.eval(), path, fmt, example)
        if diff is not None and diff > TOLERANCE:
            raise UserError(f"{path}: its outputs differ from PyTorch's by {diff:.2e}; the network does not "
                            f"export faithfully to {fmt}")
        check = "unchecked (no onnxruntime)" if diff is None else f"max |diff| vs PyTorch {diff:.1e}"
        print(f"wrote {path} ({check})")
        written.append(path)
    print(f"wrote {folder / MANIFEST} (classes, normalisation, size: what a deployer needs)")
    return written
