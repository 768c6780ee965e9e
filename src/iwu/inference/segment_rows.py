"""The per-segment table `iwu evaluate --segments` gathers batch by batch, and its CSV file.

Only the table grows with the number of images: each batch's segments (`iwu.method.segments.Segments`)
are appended as numpy columns and the batch's tensors are dropped.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from iwu.method.segments import Segments, feature_names
from iwu.util.atomic_files import atomic_write_bytes


class SegmentRows:
    """Segments of every batch seen, with the name of the image each comes from."""

    def __init__(self, classes):
        self.classes = list(classes)
        self.features = feature_names(len(self.classes))
        self._parts: list[dict] = []

    def add(self, segments: Segments, names, first_image: int) -> None:
        """The segments of a batch whose images are `names` and whose first image is number `first_image`."""
        image = segments.image.cpu().numpy()
        self._parts.append({
            "image_index": image + first_image, "image": np.asarray(list(names), dtype=object)[image],
            "segment": segments.segment.cpu().numpy(), "class": segments.cls.cpu().numpy(),
            **{k: segments.features[k].cpu().numpy() for k in self.features}, "iou": segments.iou.cpu().numpy()})

    def columns(self) -> dict:
        """{column: (n,) array} over every batch: image_index, image, segment, class, the features, iou."""
        keys = ["image_index", "image", "segment", "class", *self.features, "iou"]
        if not self._parts:
            return {k: np.empty(0, object if k == "image" else np.float64) for k in keys}
        return {k: np.concatenate([p[k] for p in self._parts]) for k in keys}

    def __len__(self) -> int:
        return sum(len(p["iou"]) for p in self._parts)


def write_segments_csv(rows: SegmentRows, path) -> Path:
    """One row per segment: image, segment, class, class_name, the features, iou (empty: no target); atomically."""
    cols = rows.columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "segment", "class", "class_name", *rows.features, "iou"])
    names = np.asarray(rows.classes, dtype=object)
    features = np.column_stack([cols[k] for k in rows.features]) if len(rows) else np.empty((0, len(rows.features)))
    for i in range(len(rows)):
        iou = cols["iou"][i]
        writer.writerow([cols["image"][i], int(cols["segment"][i]), int(cols["class"][i]),
                         names[int(cols["class"][i])], *features[i].tolist(), "" if iou != iou else float(iou)])
    return atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
