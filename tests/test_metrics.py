"""IoU from confusion matrices, on a case counted by hand."""

import math

import torch

from iwu.method.metrics import confusion_matrix, iou_from_confusion


def test_iou_counted_by_hand():
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    matrix = confusion_matrix(pred, target, num_classes=4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    iou, miou = iou_from_confusion(matrix)
    # class 0: 1 hit / (2 true + 2 predicted - 1); class 1: 2 / (2 + 3 - 2); class 2: 0 / 1.
    assert iou[:3].tolist() == [1 / 3, 2 / 3, 0.0]
    assert math.isnan(iou[3])  # absent from the truth: not averaged
    assert miou == (1 / 3 + 2 / 3 + 0.0) / 3


def test_confusion_matrices_add_up_over_batches():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4, 8, 8), generator=g)
    pred = torch.randint(0, 5, (4, 8, 8), generator=g)
    whole = confusion_matrix(pred, target, 5)
    parts = confusion_matrix(pred[:2], target[:2], 5) + confusion_matrix(pred[2:], target[2:], 5)
    assert torch.equal(whole, parts)
    assert whole.sum() == target.numel()


def test_fused_confusion_matrices_equal_torchmetrics_one_by_one():
    from iwu.method.metrics import confusion_matrices

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 7, (2, 9, 11), generator=g)
    target[0, :3] = 255
    preds = torch.randint(0, 7, (3, 2, 9, 11), generator=g)
    fused = confusion_matrices(preds, target, num_classes=7)
    assert fused.shape == (3, 7, 7) and fused.dtype == torch.int64
    for k in range(3):
        assert torch.equal(fused[k], confusion_matrix(preds[k], target, num_classes=7))
    assert torch.equal(confusion_matrices(list(preds), target, 7), fused)
