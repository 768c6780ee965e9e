"""Synthetic data in the real datasets' layouts, so the demo and the tests exercise the real loaders.

    scenes, weather   street scenes (the 19 Cityscapes classes) and ACDC's four conditions
    street            those scenes written as Cityscapes or ACDC
    fakes             small Kvasir-SEG and Pascal VOC sets
    writer            `write_synthetic`: any layout, built aside and renamed into place
"""

from iwu.data.synthetic.street import scene_arrays
from iwu.data.synthetic.writer import LAYOUTS, MARKER, write_synthetic

__all__ = ["LAYOUTS", "MARKER", "scene_arrays", "write_synthetic"]
