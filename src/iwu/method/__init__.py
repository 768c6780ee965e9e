"""The method and its measures: pure functions on tensors (no Lightning, no files, no datasets).

`uncertainty` (pixel and instance uncertainty), `losses` (the per-pixel losses), `modes` (a training mode:
its weights and its loss), `metrics` (IoU from confusion matrices), `calibration` (how good the
uncertainty is). docs/method.md states the method these implement.
"""
