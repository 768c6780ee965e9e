"""iwu: instance-wise uncertainty training for class-imbalanced semantic segmentation."""

__version__ = "0.1.0"
