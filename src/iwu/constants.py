"""Values every part of iwu agrees on, defined once (this module imports nothing, so any module may)."""

IGNORE_INDEX = 255  # the label of pixels no loss or score counts (Cityscapes' void, VOC's borders)
ENSEMBLE = "ensemble"  # the name the ensemble's scores go by, beside each member's own
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what the image readers take
