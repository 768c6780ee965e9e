"""The carried Cityscapes label table agrees with the official toolkit."""

import numpy as np
import pytest

from iwu.data.cityscapes import (
    CLASSES,
    LABEL_IDS,
    LABELS,
    PALETTE,
    TRAIN_IDS,
    TRAIN_TO_LABEL_ID,
)

official = pytest.importorskip("cityscapesscripts.helpers.labels")


def test_table_equals_cityscapesscripts():
    theirs = [(lab.name, lab.id, lab.trainId, tuple(lab.color)) for lab in official.labels]
    ours = [(lab.name, lab.id, lab.train_id, tuple(lab.color)) for lab in LABELS]
    assert ours == theirs
    assert sorted(lab.id for lab in LABELS) == [-1, *range(34)]


def test_label_id_mapping_matches_official_for_all_ids():
    for lab in official.labels:
        if lab.id < 0:
            continue  # license plate: never stored in a labelIds image
        expected = lab.trainId if 0 <= lab.trainId < 255 else 255
        assert LABEL_IDS.lut[lab.id] == expected, lab.name
        assert LABEL_IDS.known[lab.id]
    assert not LABEL_IDS.known[34:].any()


def test_train_classes_and_inverse():
    train = sorted((lab for lab in official.labels if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)
    assert CLASSES == tuple(lab.name for lab in train)
    assert PALETTE == tuple(tuple(lab.color) for lab in train)
    assert np.array_equal(LABEL_IDS.lut[TRAIN_TO_LABEL_ID], np.arange(19))
    assert TRAIN_IDS.known[:19].all() and TRAIN_IDS.known[255] and TRAIN_IDS.known.sum() == 20
