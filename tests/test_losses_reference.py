"""The classic losses and SCA against their references, value and gradient, in float64."""

import math

import pytest
import torch
from torchvision import ops
from torchvision.ops._utils import _loss_inter_union

from scabench import losses
from scabench.bench.contract import random_pairs

TORCHVISION = {
    "giou": ops.generalized_box_iou_loss,
    "diou": ops.distance_box_iou_loss,
    "ciou": ops.complete_box_iou_loss,
    # torchvision has no IoU loss; its losses all share this IoU (eps in the union).
    "iou": lambda p, t: 1 - _loss_inter_union(p, t)[0] / (_loss_inter_union(p, t)[1] + 1e-7),
}


def value_and_grad(fn, pred, target):
    pred = pred.detach().clone().requires_grad_(True)
    value = fn(pred, target)
    (grad,) = torch.autograd.grad(value.sum(), pred)
    return value.detach(), grad


def assert_parity(ours, reference, pred, target, rtol=1e-6):
    v1, g1 = value_and_grad(ours, pred, target)
    v2, g2 = value_and_grad(reference, pred, target)
    torch.testing.assert_close(v1, v2, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("name", ["iou", "giou", "diou", "ciou"])
def test_matches_torchvision(name, relation):
    pred, target = random_pairs(256, relation)
    assert_parity(losses.get_loss(name), TORCHVISION[name], pred, target)


def sca_reference(pred, target, alpha=1.0, eps=1e-7):
    """SCA as REFERENCES section 1 states the authors' code, written out term by term."""
    x1, y1, x2, y2 = pred.unbind(-1)
    gx1, gy1, gx2, gy2 = target.unbind(-1)
    w_in = torch.min(x2, gx2) - torch.max(x1, gx1)
    h_in = torch.min(y2, gy2) - torch.max(y1, gy1)
    w_out = torch.max(x2, gx2) - torch.min(x1, gx1)
    h_out = torch.max(y2, gy2) - torch.min(y1, gy1)
    so = w_in / w_out + h_in / h_out
    d_lt = torch.sqrt((x1 - gx1 + eps) ** 2 + (y1 - gy1 + eps) ** 2)
    d_rb = torch.sqrt((x2 - gx2 + eps) ** 2 + (y2 - gy2 + eps) ** 2)
    diag = torch.sqrt((w_out + eps) ** 2 + (h_out + eps) ** 2)
    cd = alpha * (d_lt + d_rb) / (diag + eps)
    similarity = so - cd - 1
    return similarity, so, cd


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_sca_matches_authors_formulation(relation, alpha):
    pred, target = random_pairs(256, relation, seed=1)
    assert_parity(
        losses.get_loss("sca", alpha=alpha), lambda p, t: 1 - sca_reference(p, t, alpha)[0], pred, target
    )
    assert_parity(losses.get_loss("so"), lambda p, t: 2 - sca_reference(p, t)[1], pred, target)
    assert_parity(losses.get_loss("cd", alpha=alpha), lambda p, t: sca_reference(p, t, alpha)[2], pred, target)


def test_sca_similarity_is_the_authors_objectness_target():
    """x-shift of 0.1 w on a unit box: IoU = 0.9/1.1 = 0.818; SO = 0.9/1.1 + 1 = 1.8182,
    CD = (0.1 + 0.1) / sqrt(1.1^2 + 1) = 0.13454, s = SO - CD - 1 = 0.68365 (REFERENCES 1).
    x-shift 0.5 w: SO = 0.5/1.5 + 1 = 1.3333, CD = 1/sqrt(3.25) = 0.55470, s = -0.22137."""
    target = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2, dtype=torch.float64)
    pred = target + torch.tensor([[0.1, 0, 0.1, 0], [0.5, 0, 0.5, 0]], dtype=torch.float64)
    sca = losses.get_loss("sca")
    s = sca.similarity(pred, target)
    torch.testing.assert_close(s, torch.tensor([0.68365, -0.22137], dtype=torch.float64), atol=5e-5, rtol=0)
    iou = losses.get_loss("iou").similarity(pred, target)
    torch.testing.assert_close(iou, ops.box_iou(pred, target).diagonal(), rtol=1e-6, atol=0)


def test_hand_derived_values():
    """GIoU: identical 0; [0,0,1,1] vs [0,1,1,2] touch: IoU 0, C = 1x2 = union -> 1.0;
    diagonal neighbours [0,0,1,1] vs [1,1,2,2]: C = 4, union 2 -> 1 + 2/4 = 1.5.
    DIoU: [-1,-1,1,1] vs [0,0,1,1]: IoU 1/4, rho^2 = 0.5^2 + 0.5^2 = 0.5, c^2 = 2^2 + 2^2 = 8
    -> 1 - 0.25 + 0.5/8 = 0.8125.
    SCA: [1,0,2,1] vs [0,0,1,1] (touching on x): w_in 0, w_out 2, h_in = h_out = 1 -> SO = 1;
    d_lt = d_rb = 1, diag = sqrt(5) -> loss = 1 + 2/sqrt(5) = 1.894427.
    CD alone for a box inside a box twice its size, [0,0,1,1] vs [0,0,2,2]: d_lt 0,
    d_rb sqrt(2), diag 2 sqrt(2) -> 0.5."""
    b = lambda *rows: torch.tensor(rows, dtype=torch.float64)
    giou = losses.get_loss("giou")
    torch.testing.assert_close(
        giou(b([0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]), b([0, 0, 1, 1], [0, 1, 1, 2], [1, 1, 2, 2])),
        b(0.0, 1.0, 1.5), atol=1e-6, rtol=0,
    )
    torch.testing.assert_close(losses.get_loss("diou")(b([-1, -1, 1, 1]), b([0, 0, 1, 1])), b(0.8125), atol=1e-6, rtol=0)
    torch.testing.assert_close(losses.get_loss("sca")(b([1, 0, 2, 1]), b([0, 0, 1, 1])), b(1 + 2 / math.sqrt(5)), atol=1e-6, rtol=0)
    torch.testing.assert_close(losses.get_loss("cd")(b([0, 0, 1, 1]), b([0, 0, 2, 2])), b(0.5), atol=1e-6, rtol=0)


def test_ciou_variants_differ_only_in_alpha():
    """At IoU <= 0.5 the gated CIoU is DIoU; the YOLO alpha v/(v - IoU + 1) equals torchvision's."""
    pred, target = random_pairs(512, "overlap", seed=3)
    iou = 1 - losses.get_loss("iou")(pred, target)
    gated = losses.get_loss("ciou-gated")(pred, target)
    diou = losses.get_loss("diou")(pred, target)
    low = iou <= 0.5
    assert low.any() and (~low).any()
    torch.testing.assert_close(gated[low], diou[low])
    assert (gated[~low] >= diou[~low]).all()
    torch.testing.assert_close(losses.get_loss("ciou-yolo")(pred, target), losses.get_loss("ciou")(pred, target), rtol=1e-6, atol=1e-9)


def test_compositions():
    pred, target = random_pairs(64, "overlap", seed=4)
    get = losses.get_loss
    torch.testing.assert_close(get("iou+cd")(pred, target), get("iou")(pred, target) + get("cd")(pred, target))
    torch.testing.assert_close(get("so+0.5*cd")(pred, target), get("sca", alpha=0.5)(pred, target))
    torch.testing.assert_close(get("iou+center")(pred, target), get("diou")(pred, target))
    assert get("iou+cd").similarity(pred, target).shape == (64,)
    assert losses.parse_expression("so + 2e-1*cd") == [(1.0, "so"), (0.2, "cd")]


def test_errors_name_what_exists():
    with pytest.raises(KeyError, match="available: .*giou"):
        losses.get_loss("gio")
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['beta'\].*alpha=1.0"):
        losses.get_loss("sca", beta=1)
    with pytest.raises(KeyError, match="unknown loss 'nope'"):
        losses.get_loss("iou+nope")
    with pytest.raises(ValueError, match="cannot read loss term"):
        losses.get_loss("iou+2**cd")
    with pytest.raises(ValueError, match=r"pred \(3, 4\) and target \(2, 4\)"):
        losses.get_loss("iou")(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        losses.get_loss("iou")(torch.zeros(3, 5), torch.zeros(3, 5))


def test_check_boxes_names_first_bad_box():
    good = torch.tensor([[0.0, 0, 1, 1]])
    losses.check_boxes(good)
    boxes = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 0, 1, 1], [0, 0, float("nan"), 1]])
    with pytest.raises(ValueError, match=r"gt\[2\] = \[2\.0, 0\.0, 1\.0, 1\.0\]: x2 < x1"):
        losses.check_boxes(boxes, name="gt")
    with pytest.raises(ValueError, match=r"boxes\[\(1, 0\)\].*zero area"):
        losses.check_boxes(torch.tensor([[[0.0, 0, 1, 1]], [[0, 0, 0, 1]]]))
    losses.check_boxes(torch.tensor([[0.0, 0, 0, 1]]), allow_empty_area=True)
    with pytest.raises(ValueError, match="non-finite"):
        losses.check_boxes(torch.tensor([[0.0, 0, float("inf"), 1]]))
