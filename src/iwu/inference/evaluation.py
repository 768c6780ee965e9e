"""`iwu evaluate`: a run's members and ensemble on any dataset, with the quality of their uncertainty.

One forward pass per member and batch gives every member's and the ensemble's
confusion matrix (accumulated on the device) and feeds the uncertainty meter
(calibration, PAvPU, AUROC of misclassification; binned counts, so a whole
split is measured exactly in constant memory). Results go to
`eval_<dataset>.json` in the run directory, in the shape of `final.json`'s
`results`, plus `uncertainty` and a reliability diagram. With `segments`, the same pass also gathers every
predicted segment's features and IoU (`iwu.method.segments`) into `segments_<dataset>.csv`, and the eval
file gains the meta classification and regression of those segments (`iwu.inference.meta_seg`) under
`segments`, drawn beside it (`iwu.plots.segments`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from iwu.errors import UserError
from iwu.method.calibration import UncertaintyMeter
from iwu.method.segments import segment_table
from iwu.data.common import DataFileError, atomic_save_png, load_pair, make_item, raise_if_problems, resize_pair
from iwu.engine.ensemble import ENSEMBLE
from iwu.util.atomic_files import atomic_write_json
from iwu.method.metrics import confusion_matrices, iou_from_confusion
from iwu.util.output_paths import refuse_existing, refuse_overlap
from iwu.plots import run_title
from iwu.plots.reliability import save_reliability_diagram
from iwu.plots.segments import save_segments_figure
from iwu.engine.run_dir import BEST, eval_file, segments_classifier_file, segments_figure_file, segments_file
from iwu.util.bars import bar
from iwu.util.bounded import MAX_SIDE
from iwu.inference.loading import Loaded, check_classes, dataset_for, load_models, member_probabilities
from iwu.inference.meta_seg import analyse, fit_classifier, roc_curves
from iwu.inference.segment_rows import SegmentRows, write_segments_csv


def dataset_label(source: dict, split: str, native: bool = False, size: int | None = None) -> str:
    """`acdc`, `acdc-fog+night`, `cityscapes-native`, `cityscapes-512px`, `cityscapes_test`: names the file and
    the column of a report. Scores at the labels' own resolution, or at a `size` other than the run's
    training size, are another column than at the training size, and never replace its file."""
    label = source["kind"]
    if source.get("conditions"):
        label += "-" + "+".join(source["conditions"])
    if native:
        label += "-native"
    elif size is not None:
        label += f"-{size}px"
    return label if split == "val" else f"{label}_{split}"


def _check_native_side(label: Path) -> None:
    """Scoring at a label's own resolution upsamples every member's logits to it: past MAX_SIDE pixels a side
    that is gigabytes per image, so such a label is refused from its header, before it is decoded."""
    try:
        with Image.open(label) as header:
            width, height = header.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return  # unreadable: the loader says so in its own words
    if max(width, height) > MAX_SIDE:
        raise DataFileError(f"{label}: {width}x{height}; --native scores labels of at most {MAX_SIDE} pixels a "
                            "side; evaluate at a --size instead")


class NativeLabels(torch.utils.data.Dataset):
    """The items of `dataset` (images at its size), each label at the resolution it has on disk."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.kind, self.split, self.classes = dataset.kind, dataset.split, dataset.classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset.samples[index]
        _check_native_side(sample.label)
        image, values, problems = load_pair(sample)  # one decode serves both sizes
        raise_if_problems(problems)
        resized, _ = resize_pair(image, values, sample.labels, self.dataset.size)
        return make_item(resized, sample.labels.lut[values], sample.name, mean=self.dataset.mean, std=self.dataset.std)


def _scores(confusion: torch.Tensor, names: list[str]) -> dict:
    results = {}
    for matrix, name in zip(confusion, names):
        iou, miou = iou_from_confusion(matrix)
        total = int(matrix.sum())
        results[name] = {"miou": miou, "iou": [None if v != v else float(v) for v in iou.tolist()],
                         "pixel_accuracy": float(matrix.diag().sum()) / total if total else float("nan")}
    return results


def _save_predictions(folder: Path, names, pred: torch.Tensor, kind: str) -> None:
    """The ensemble's predictions as PNGs named like the items (Cityscapes: labelIds, as the official evaluator reads)."""
    from iwu.data.cityscapes import TRAIN_TO_LABEL_ID

    for name, p in zip(names, pred.cpu().numpy().astype(np.uint8)):
        image = TRAIN_TO_LABEL_ID[p] if kind == "cityscapes" else p
        atomic_save_png(image, folder / f"{name}.png")


@torch.no_grad()
def evaluate(loaded: Loaded, dataset, *, batch_size: int = 1, workers: int = 0, uncertainty_threshold=None,
             save_predictions=None, progress: bool = True, native: bool = False, segments: bool = False) -> dict:
    """Scores of every member and the ensemble on `dataset`, and the uncertainty's quality.

    `native`: each image is still seen at the dataset's size, and its logits are upsampled to its label's
    own resolution, where it is scored (and saved); labels of other sizes do not batch, so one at a time.
    `segments`: also the `SegmentRows` of the ensemble's predicted segments under ``"segments"``, their
    instances found with the run's `loss.connectivity` and `loss.backend`.
    """
    check_classes(loaded, dataset)
    if native:
        dataset, batch_size = NativeLabels(dataset), 1
    module, device = loaded.module, loaded.device
    names = [*module.names, ENSEMBLE]
    num_classes = len(module.classes)
    confusion = torch.zeros(len(names), num_classes, num_classes, dtype=torch.long, device=device)
    meter = UncertaintyMeter(num_classes, uncertainty_threshold=uncertainty_threshold, device=device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    batches = bar(loader, desc=f"evaluate {dataset.kind} {dataset.split}", unit="batch") if progress else loader
    rows, seen, loss = SegmentRows(module.classes) if segments else None, 0, loaded.config.loss
    for batch in batches:
        images, labels = batch["image"].to(device), batch["label"].to(device)
        members = member_probabilities(module, images, labels.shape[-2:])
        mean = members.mean(dim=0)
        preds = torch.cat([members.argmax(dim=2), mean.argmax(dim=1).unsqueeze(0)])
        confusion += confusion_matrices(preds, labels, num_classes)
        meter.update(mean, labels, members if len(members) > 1 else None)
        if rows is not None:  # only the table grows: the batch's tensors go with the batch
            rows.add(segment_table(members, labels, connectivity=loss.connectivity, backend=loss.backend),
                     batch["name"], seen)
        seen += len(images)
        if save_predictions is not None:
            _save_predictions(Path(save_predictions), batch["name"], preds[-1], dataset.kind)
    out = {"results": _scores(confusion, names), "uncertainty": meter.compute()}
    return {**out, "segments": rows} if segments else out


def segment_summary(rows: SegmentRows):
    """(the eval file's `segments` entry, `iwu.inference.meta_seg.MetaSeg` or None): the meta classification
    and regression of `rows`, or, where they cannot be fitted, the counts and the one-line reason."""
    cols = rows.columns()
    try:
        meta = analyse({k: cols[k] for k in rows.features}, cols["iou"], cols["image_index"], cols["class"],
                       len(rows.classes))
    except UserError as err:
        with_target = int((cols["iou"] == cols["iou"]).sum())
        return {"segments": len(rows), "with_target": with_target, "error": str(err)}, None
    return meta.summary, meta


def format_table(classes, results: dict) -> str:
    names = list(results)
    width = max(12, *(len(n) + 2 for n in names))
    lines = [f"{'class':<15}" + "".join(f"{n:>{width}}" for n in names)]
    for c, cls in enumerate(classes):
        cells = [results[n]["iou"][c] for n in names]
        lines.append(f"{cls:<15}" + "".join(f"{'--':>{width}}" if v is None else f"{v:>{width}.4f}" for v in cells))
    for key, label in (("miou", "mIoU"), ("pixel_accuracy", "pixel acc.")):
        lines.append(f"{label:<15}" + "".join(f"{results[n][key]:>{width}.4f}" for n in names))
    return "\n".join(lines)


def result_name(loaded: Loaded, label: str) -> tuple[str, str]:
    """(file name part, model evaluated): ``acdc`` and ``ensemble`` for a run's best ensemble, ``acdc@<file>``
    and the member's name for any other checkpoint, so results of different checkpoints never replace
    each other."""
    if loaded.checkpoint is None or loaded.checkpoint.name == BEST.name:
        return label, ENSEMBLE
    evaluated = loaded.module.names[0] if len(loaded.module.names) == 1 else ENSEMBLE
    return f"{label}@{loaded.checkpoint.stem}", evaluated


def run_evaluate(target, data: str, split: str = "val", size=None, batch_size: int = 1, workers: int = 0,
                 uncertainty_threshold=None, save_predictions=None, device=None, overwrite: bool = False,
                 native: bool = False, segments: bool = False) -> int:
    from iwu.data.sources import parse_data_spec

    source = parse_data_spec(data)
    if save_predictions is not None:  # before the models load: a mistake here costs nothing
        refuse_overlap(save_predictions, [source["root"]], "--save-predictions")
    loaded = load_models(target, device)
    dataset = dataset_for(loaded, source, split, size)
    other_size = size if size is not None and size != loaded.config.data.size else None
    label = dataset_label(source, split, native, other_size)
    if save_predictions is not None:
        refuse_existing((Path(save_predictions) / f"{name}.png" for name in dataset.names), "--save-predictions",
                        overwrite)
        Path(save_predictions).mkdir(parents=True, exist_ok=True)
    out = evaluate(loaded, dataset, batch_size=batch_size, workers=workers,
                   uncertainty_threshold=uncertainty_threshold, save_predictions=save_predictions, native=native,
                   segments=segments)
    rows = out.pop("segments", None)
    name, evaluated = result_name(loaded, label)
    record = {"dataset": label, "kind": source["kind"], "root": str(dataset.root), "split": split,
              "size": "native" if native else dataset.size, "images": len(dataset), "classes": list(dataset.classes),
              "checkpoint": loaded.checkpoint.name, "evaluated": evaluated, **out}
    if evaluated != ENSEMBLE:  # one member's own best: an "ensemble" of it would pose as the run's ensemble
        record["results"] = {evaluated: out["results"][evaluated]}
    if rows is not None:
        summary, meta = segment_summary(rows)
        record["segments"] = {**summary, "file": segments_file(name)}
        table = write_segments_csv(rows, loaded.run_dir / segments_file(name))
        if meta is not None:  # for iwu predict to flag segments of new images
            cols = rows.columns()
            classifier = fit_classifier({k: cols[k] for k in rows.features}, cols["iou"], cols["class"],
                                        len(rows.classes))
            atomic_write_json(loaded.run_dir / segments_classifier_file(name), classifier)
            record["segments"]["classifier"] = segments_classifier_file(name)
    path = atomic_write_json(loaded.run_dir / eval_file(name), record)
    shown = f"{evaluated} on {dataset_label(source, 'val', native, other_size)}/{split}"
    figure = save_reliability_diagram(out["uncertainty"], loaded.run_dir / f"reliability_{name}.png",
                                      title=run_title(loaded.config, shown), classes=list(dataset.classes))
    print(format_table(dataset.classes, out["results"]))
    unc = out["uncertainty"]
    print(f"\nensemble: ECE {unc['ece']:.4f}, classwise ECE {unc['classwise_ece']:.4f}; "
          + "; ".join(f"{kind}: AUROC {unc[kind]['auroc']:.4f}, PAvPU {unc[kind]['pavpu']:.4f}"
                      for kind in ("entropy", "mutual_information") if kind in unc))
    if rows is not None:
        path = f"{path}, {figure}, {table}"
        figure = _segments_outputs(loaded, rows, summary, meta, name, shown)
    print(f"wrote {path} and {figure}")
    return 0


def _segments_outputs(loaded: Loaded, rows: SegmentRows, summary: dict, meta, name: str, shown: str) -> Path:
    """Print the segments' summary and draw their figure; returns the figure's path."""
    cols = rows.columns()
    kept = cols["iou"] == cols["iou"]
    if meta is None:
        print(f"segments: {len(rows)}, {int(kept.sum())} with a ground truth; no meta classification: "
              f"{summary['error']}")
    else:
        s = meta.summary
        print(f"segments: {s['with_target']} with a ground truth, {s['iou_zero_share']:.1%} with IoU 0; "
              f"meta classification AUROC: {s['headline']} {s['headline_auroc']:.4f}, logistic regression "
              f"{s['logistic_auroc']:.4f}; meta regression R2 {s['linear_r2']:.4f} ({s['folds']} folds by image)")
    return save_segments_figure(cols["instance_uncertainty"][kept], cols["iou"][kept],
                                roc_curves(meta) if meta is not None else {},
                                loaded.run_dir / segments_figure_file(name), title=run_title(loaded.config, shown))
