"""The successor losses (losses/successors.py, losses/wise_iou.py) against their papers.

Each loss is restated below in plain Python on floats (``math``), one box pair at a time: a
code path that shares nothing with the tensor implementation. Values are compared in
float64; autograd gradients are compared with central finite differences of the restated
formula (terms the implementation detaches are frozen at the evaluation point in the
restatement, as ``frozen``). The restatements use the same documented eps conventions
(IoU = inter / (union + eps), eps added to c^2 where the reference code adds it).
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from scabench import losses
from scabench.losses.wise_iou import WIOU_MOMENTUM, focusing_v3

EPS = 1e-7
OURS = [
    "eiou",
    "focal-eiou",
    "siou",
    "alpha-iou",
    "alpha-ciou",
    "mpdiou",
    "inner-iou",
    "focaler-iou",
    "shape-iou",
    "piou",
    "piou-v2",
    "wiou-v1",
    "wiou-v2",
    "wiou-v3",
]


# --------------------------------------------------------------------------------------
# Plain-Python restatements of the papers' formulas


def geom(b, g):
    x1, y1, x2, y2 = b
    gx1, gy1, gx2, gy2 = g
    w, h, gw, gh = x2 - x1, y2 - y1, gx2 - gx1, gy2 - gy1
    iw = max(0.0, min(x2, gx2) - max(x1, gx1))
    ih = max(0.0, min(y2, gy2) - max(y1, gy1))
    inter = iw * ih
    union = w * h + gw * gh - inter
    cw = max(x2, gx2) - min(x1, gx1)
    ch = max(y2, gy2) - min(y1, gy1)
    dx = (x1 + x2) / 2 - (gx1 + gx2) / 2
    dy = (y1 + y2) / 2 - (gy1 + gy2) / 2
    return dict(w=w, h=h, gw=gw, gh=gh, iou=inter / (union + EPS), cw=cw, ch=ch, dx=dx, dy=dy)


def ref_eiou(b, g):
    q = geom(b, g)
    return (
        1
        - q["iou"]
        + (q["dx"] ** 2 + q["dy"] ** 2) / (q["cw"] ** 2 + q["ch"] ** 2 + EPS)
        + (q["w"] - q["gw"]) ** 2 / (q["cw"] ** 2 + EPS)
        + (q["h"] - q["gh"]) ** 2 / (q["ch"] ** 2 + EPS)
    )


def ref_focal_eiou(b, g, frozen=None, gamma=0.5):
    weight = geom(*(frozen or (b, g)))["iou"] ** gamma
    return weight * ref_eiou(b, g)


def ref_siou(b, g, theta=4.0, neg_gamma=True):
    """The paper's SIoU, Lambda through arcsin as written; neg_gamma=False is mmdet's default."""
    q = geom(b, g)
    sigma = math.hypot(q["dx"], q["dy"])
    x = abs(q["dy"]) / sigma  # sin(alpha)
    if x > math.sin(math.pi / 4):  # minimise beta = pi/2 - alpha instead
        x = abs(q["dx"]) / sigma
    lam = 1 - 2 * math.sin(math.asin(x) - math.pi / 4) ** 2
    gamma = 2 - lam
    sign = -1 if neg_gamma else 1
    rho_x, rho_y = (q["dx"] / q["cw"]) ** 2, (q["dy"] / q["ch"]) ** 2
    delta = 2 - math.exp(sign * gamma * rho_x) - math.exp(sign * gamma * rho_y)
    om_w = abs(q["w"] - q["gw"]) / max(q["w"], q["gw"])
    om_h = abs(q["h"] - q["gh"]) / max(q["h"], q["gh"])
    omega = (1 - math.exp(-om_w)) ** theta + (1 - math.exp(-om_h)) ** theta
    return 1 - q["iou"] + (delta + omega) / 2


def ref_alpha_iou(b, g, alpha=3.0):
    return 1 - geom(b, g)["iou"] ** alpha


def _v(q):
    return 4 / math.pi**2 * (math.atan(q["gw"] / q["gh"]) - math.atan(q["w"] / q["h"])) ** 2


def ref_alpha_ciou(b, g, frozen=None, alpha=3.0):
    q = geom(b, g)
    q0 = geom(*(frozen or (b, g)))
    beta = _v(q0) / (1 - q0["iou"] + _v(q0) + EPS)
    centre = (q["dx"] ** 2 + q["dy"] ** 2) / (q["cw"] ** 2 + q["ch"] ** 2 + EPS)
    return 1 - q["iou"] ** alpha + centre**alpha + (beta * _v(q)) ** alpha


def ref_mpdiou(b, g, W=640.0, H=640.0):
    q = geom(b, g)
    d1 = (b[0] - g[0]) ** 2 + (b[1] - g[1]) ** 2
    d2 = (b[2] - g[2]) ** 2 + (b[3] - g[3]) ** 2
    return 1 - q["iou"] + d1 / (W**2 + H**2) + d2 / (W**2 + H**2)


def _scale(box, r):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    w, h = box[2] - box[0], box[3] - box[1]
    return (cx - r * w / 2, cy - r * h / 2, cx + r * w / 2, cy + r * h / 2)


def ref_inner_iou(b, g, ratio=0.75):
    return 1 - geom(_scale(b, ratio), _scale(g, ratio))["iou"]


def ref_focaler(b, g, d=0.0, u=0.95):
    return 1 - min(1.0, max(0.0, (geom(b, g)["iou"] - d) / (u - d)))


def ref_shape_iou(b, g, scale=0.0):
    q = geom(b, g)
    ww = 2 * q["gw"] ** scale / (q["gw"] ** scale + q["gh"] ** scale)
    hh = 2 * q["gh"] ** scale / (q["gw"] ** scale + q["gh"] ** scale)
    dist = (hh * q["dx"] ** 2 + ww * q["dy"] ** 2) / (q["cw"] ** 2 + q["ch"] ** 2 + EPS)
    om_w = hh * abs(q["w"] - q["gw"]) / max(q["w"], q["gw"])
    om_h = ww * abs(q["h"] - q["gh"]) / max(q["h"], q["gh"])
    shape = (1 - math.exp(-om_w)) ** 4 + (1 - math.exp(-om_h)) ** 4
    return 1 - q["iou"] + dist + 0.5 * shape


def _penalty(b, g):
    gw, gh = g[2] - g[0], g[3] - g[1]
    return (abs(b[0] - g[0]) / gw + abs(b[2] - g[2]) / gw + abs(b[1] - g[1]) / gh + abs(b[3] - g[3]) / gh) / 4


def ref_piou(b, g):
    return 1 - geom(b, g)["iou"] + 1 - math.exp(-_penalty(b, g) ** 2)


def ref_piou_v2(b, g, lam=1.3):
    x = lam * math.exp(-_penalty(b, g))
    return 3 * x * math.exp(-x * x) * ref_piou(b, g)


def ref_wiou_v1(b, g, frozen=None):
    q, q0 = geom(b, g), geom(*(frozen or (b, g)))
    return math.exp((q["dx"] ** 2 + q["dy"] ** 2) / (q0["cw"] ** 2 + q0["ch"] ** 2 + EPS)) * (1 - q["iou"])


def ref_wiou_v2(b, g, mean, frozen=None, gamma=0.5):
    beta = (1 - geom(*(frozen or (b, g)))["iou"]) / mean
    return beta**gamma * ref_wiou_v1(b, g, frozen)


def ref_wiou_v3(b, g, mean, frozen=None, alpha=1.9, delta=3.0):
    beta = (1 - geom(*(frozen or (b, g)))["iou"]) / mean
    return beta / (delta * alpha ** (beta - delta)) * ref_wiou_v1(b, g, frozen)


# (name, restatement, takes_frozen): the restatement's extra arguments are the loss defaults
REFS = {
    "eiou": (ref_eiou, False),
    "focal-eiou": (ref_focal_eiou, True),
    "siou": (ref_siou, False),
    "alpha-iou": (ref_alpha_iou, False),
    "alpha-ciou": (ref_alpha_ciou, True),
    "mpdiou": (ref_mpdiou, False),
    "inner-iou": (ref_inner_iou, False),
    "focaler-iou": (ref_focaler, False),
    "shape-iou": (ref_shape_iou, False),
    "piou": (ref_piou, False),
    "piou-v2": (ref_piou_v2, False),
    "wiou-v1": (ref_wiou_v1, True),
}


# --------------------------------------------------------------------------------------
# Box pairs of every relation


def _pairs(seed: int = 7):
    """Pred/target pairs: 4 overlapping, 3 disjoint, 3 nested (pred inside), 3 enclosing."""
    rng = random.Random(seed)
    pairs = []

    def box(x, y, w, h):
        return (x, y, x + w, y + h)

    for _ in range(4):  # partial overlap
        x, y, w, h = rng.uniform(0, 10), rng.uniform(0, 10), rng.uniform(1, 6), rng.uniform(1, 6)
        pairs.append((box(x + rng.uniform(-0.6, 0.6) * w, y + rng.uniform(-0.6, 0.6) * h,
                          w * rng.uniform(0.6, 1.6), h * rng.uniform(0.6, 1.6)), box(x, y, w, h)))
    for _ in range(3):  # disjoint
        x, y, w, h = rng.uniform(0, 10), rng.uniform(0, 10), rng.uniform(1, 4), rng.uniform(1, 4)
        pairs.append((box(x + w + rng.uniform(0.5, 5), y + rng.uniform(-3, 3), rng.uniform(1, 4), rng.uniform(1, 4)),
                      box(x, y, w, h)))
    for _ in range(3):  # nested: pred strictly inside target
        x, y, w, h = rng.uniform(0, 10), rng.uniform(0, 10), rng.uniform(3, 8), rng.uniform(3, 8)
        pairs.append((box(x + rng.uniform(0.1, 0.3) * w, y + rng.uniform(0.1, 0.3) * h,
                          rng.uniform(0.3, 0.6) * w, rng.uniform(0.3, 0.6) * h), box(x, y, w, h)))
    for _ in range(3):  # enclosing: pred strictly contains target
        x, y, w, h = rng.uniform(0, 10), rng.uniform(0, 10), rng.uniform(1, 3), rng.uniform(1, 3)
        pairs.append((box(x - rng.uniform(0.2, 2), y - rng.uniform(0.2, 2), w + rng.uniform(2.5, 4), h + rng.uniform(2.5, 4)),
                      box(x, y, w, h)))
    return pairs


PAIRS = _pairs()


def _tensors(pairs=PAIRS):
    pred = torch.tensor([p for p, _ in pairs], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([t for _, t in pairs], dtype=torch.float64, requires_grad=True)
    return pred, target


def _fd_grad(fn, b, g, frozen_point, h=1e-6):
    """Central finite differences of fn over the 8 coordinates (pred then target)."""
    grads = []
    for which in (0, 1):
        for k in range(4):
            plus, minus = [list(b), list(g)], [list(b), list(g)]
            plus[which][k] += h
            minus[which][k] -= h
            grads.append((fn(*plus, frozen_point) - fn(*minus, frozen_point)) / (2 * h))
    return grads


def _check_against(name, loss, ref, takes_frozen, pairs=PAIRS):
    pred, target = _tensors(pairs)
    value = loss(pred, target)
    value.sum().backward()
    for i, (b, g) in enumerate(pairs):
        expected = ref(b, g, (b, g)) if takes_frozen else ref(b, g)
        assert value[i].item() == pytest.approx(expected, rel=1e-9, abs=1e-12), f"{name} value, pair {i}"
        fn = (lambda bb, gg, fr: ref(bb, gg, fr)) if takes_frozen else (lambda bb, gg, fr: ref(bb, gg))
        fd = _fd_grad(fn, b, g, (b, g))
        got = pred.grad[i].tolist() + target.grad[i].tolist()
        assert got == pytest.approx(fd, rel=1e-5, abs=1e-6), f"{name} gradient, pair {i}"


@pytest.mark.parametrize("name", sorted(REFS))
def test_value_and_gradient_match_the_paper_formula(name):
    ref, takes_frozen = REFS[name]
    _check_against(name, losses.get_loss(name), ref, takes_frozen)


@pytest.mark.parametrize("name", ["wiou-v2", "wiou-v3"])
def test_wise_iou_focused_value_and_gradient(name):
    """With a frozen running mean of 0.4, v2/v3 equal the restated formula; beta carries no gradient."""
    ref = ref_wiou_v2 if name == "wiou-v2" else ref_wiou_v3
    fn = losses.spec(name).fn

    def loss(pred, target):
        return fn(pred, target, state={"iou_mean": torch.tensor(0.4, dtype=torch.float64), "frozen": True})

    _check_against(name, loss, lambda b, g, fr: ref(b, g, 0.4, fr), True)


def test_non_default_parameters_follow_the_formula():
    pairs = PAIRS[:5]
    cases = [
        ("inner-iou", dict(ratio=1.3), lambda b, g: ref_inner_iou(b, g, 1.3)),
        ("focaler-iou", dict(d=0.1, u=0.7), lambda b, g: ref_focaler(b, g, 0.1, 0.7)),
        ("shape-iou", dict(scale=1.5), lambda b, g: ref_shape_iou(b, g, 1.5)),
        ("mpdiou", dict(image_width=32, image_height=24), lambda b, g: ref_mpdiou(b, g, 32, 24)),
        ("alpha-iou", dict(alpha=0.5), lambda b, g: ref_alpha_iou(b, g, 0.5)),
        ("piou-v2", dict(lam=1.0), lambda b, g: ref_piou_v2(b, g, 1.0)),
        ("siou", dict(theta=2.0), lambda b, g: ref_siou(b, g, 2.0)),
    ]
    for name, params, ref in cases:
        _check_against(name, losses.get_loss(name, **params), ref, False, pairs)


# --------------------------------------------------------------------------------------
# Hand-derived values


def _one(name, pred, target, **params):
    p = torch.tensor([pred], dtype=torch.float64)
    t = torch.tensor([target], dtype=torch.float64)
    return losses.get_loss(name, **params)(p, t).item()


def test_eiou_closed_form():
    """A = [0,0,2,2], B = [1,1,3,3]: inter 1, union 7, IoU 1/7; enclosing 3x3, c^2 = 18;
    centres (1,1), (2,2): rho^2 = 2, so 2/18 = 1/9; equal sizes: no w/h terms.
    EIoU = 1 - 1/7 + 1/9 = 61/63.

    A = [0,0,2,2], B = [0,0,4,2]: inter 4, union 8, IoU 1/2; enclosing 4x2, c^2 = 20;
    centres (1,1), (2,1): rho^2 = 1 -> 1/20; (w - wg)^2 / cw^2 = 4/16; h equal.
    EIoU = 1/2 + 1/20 + 1/4 = 0.8; Focal-EIoU = sqrt(1/2) * 0.8.
    """
    assert _one("eiou", [0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(61 / 63, rel=1e-6)
    assert _one("eiou", [0, 0, 2, 2], [0, 0, 4, 2]) == pytest.approx(0.8, rel=1e-6)
    assert _one("focal-eiou", [0, 0, 2, 2], [0, 0, 4, 2]) == pytest.approx(math.sqrt(0.5) * 0.8, rel=1e-6)
    # disjoint boxes have IoU 0, hence weight 0: Focal-EIoU ignores them (as the paper's form)
    assert _one("focal-eiou", [0, 0, 1, 1], [3, 3, 4, 4]) == 0.0


def test_siou_closed_form():
    """A = [0,0,2,2], B = [1,0,3,2]: IoU 2/6; centre offset (-1, 0): alpha = 0, Lambda = 0,
    gamma = 2; enclosing 3x2: rho_x = 1/9, rho_y = 0; Delta = 1 - e^(-2/9); same sizes: Omega 0.
    L = 2/3 + (1 - e^(-2/9)) / 2.

    A = [0,0,2,2], B = [1,1,3,3]: IoU 1/7; offset (-1,-1): alpha = 45 deg, Lambda = 1, gamma = 1;
    enclosing 3x3: rho_x = rho_y = 1/9; Delta = 2 (1 - e^(-1/9)). L = 6/7 + 1 - e^(-1/9).

    A = [0,0,2,2], B = [0,0,4,2]: same x..., IoU 1/2, offset (-1, 0): Lambda 0, gamma 2,
    rho_x = 1/16; omega_w = 2/4: Omega = (1 - e^(-1/2))^4. L = 1/2 + (1 - e^(-1/8) + Omega)/2.
    """
    assert _one("siou", [0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(2 / 3 + (1 - math.exp(-2 / 9)) / 2, rel=1e-6)
    assert _one("siou", [0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(6 / 7 + 1 - math.exp(-1 / 9), rel=1e-6)
    omega = (1 - math.exp(-0.5)) ** 4
    assert _one("siou", [0, 0, 2, 2], [0, 0, 4, 2]) == pytest.approx(
        0.5 + (1 - math.exp(-1 / 8) + omega) / 2, rel=1e-6
    )


def test_siou_gamma_sign_matches_the_paper_not_mmdetections_default():
    """Pred [0,0,2,2] and target [s,0,s+2,2] for s = 2 (touching), 3, 4, 6 (apart): the
    paper's distance cost (gamma = 2 - Lambda inside exp(-gamma rho)) grows with the distance,
    so the loss grows; mmdetection's default (neg_gamma=False: exp(+gamma rho)) falls with it,
    i.e. its gradient pushes disjoint boxes apart. Numbers as in the siou docstring.
    """
    pred = (0.0, 0.0, 2.0, 2.0)
    shifts = [2.0, 3.0, 4.0, 6.0]
    ours = [_one("siou", list(pred), [s, 0, s + 2, 2]) for s in shifts]
    paper = [ref_siou(pred, (s, 0, s + 2, 2)) for s in shifts]
    mmdet_default = [ref_siou(pred, (s, 0, s + 2, 2), neg_gamma=False) for s in shifts]
    assert ours == pytest.approx(paper, rel=1e-9)
    assert ours == pytest.approx([1.1967, 1.2566, 1.2944, 1.3377], abs=1e-4)
    assert all(a < b for a, b in zip(ours, ours[1:]))
    assert mmdet_default[:3] == pytest.approx([0.6756, 0.4728, 0.2838], abs=1e-4)
    assert mmdet_default[3] < 0  # mmdetection clamps SIoU to [-1, 1]: its loss would read 0
    assert all(a > b for a, b in zip(mmdet_default, mmdet_default[1:]))
    # and translating the prediction towards the target lowers the loss (d/dx1 + d/dx2 < 0)
    p = torch.tensor([pred], dtype=torch.float64, requires_grad=True)
    losses.get_loss("siou")(p, torch.tensor([[3.0, 0, 5, 2]], dtype=torch.float64)).sum().backward()
    assert p.grad[0, 0] + p.grad[0, 2] < 0


def test_alpha_iou_closed_form():
    """[0,0,2,2] vs [0,0,4,2]: IoU 1/2, alpha-IoU = 1 - 1/8. alpha-CIoU adds (rho^2/c^2)^3 with
    rho^2 = 1, c^2 = 20, and (beta v)^3, v = 4/pi^2 (atan 2 - atan 1)^2, beta = v / (1/2 + v)."""
    assert _one("alpha-iou", [0, 0, 2, 2], [0, 0, 4, 2]) == pytest.approx(0.875, rel=1e-6)
    assert _one("alpha-iou", [0, 0, 2, 2], [0, 0, 4, 2], alpha=1.0) == pytest.approx(0.5, rel=1e-6)
    v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2
    beta = v / (0.5 + v)
    expected = 0.875 + (1 / 20) ** 3 + (beta * v) ** 3
    assert _one("alpha-ciou", [0, 0, 2, 2], [0, 0, 4, 2]) == pytest.approx(expected, rel=1e-6)


def test_mpdiou_closed_form():
    """[0,0,2,2] vs [1,1,3,3]: IoU 1/7; corner distances d_tl^2 = d_br^2 = 2.
    Image 4x4: 4 / 32 = 1/8, L = 1 - 1/7 + 1/8 = 55/56. Image 640x640: 4 / 819200."""
    assert _one("mpdiou", [0, 0, 2, 2], [1, 1, 3, 3], image_width=4, image_height=4) == pytest.approx(55 / 56, rel=1e-6)
    assert _one("mpdiou", [0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(6 / 7 + 4 / 819200, rel=1e-6)
    with pytest.raises(ValueError):
        losses.get_loss("mpdiou", image_width=0)(torch.zeros(1, 4), torch.zeros(1, 4))


def test_inner_iou_closed_form():
    """[0,0,4,4] vs [2,0,6,4] (IoU 1/3). ratio 0.5: [1,1,3,3] vs [3,1,5,3] touch: inner IoU 0,
    loss 1. ratio 1.5: [-1,-1,5,5] vs [1,-1,7,5]: inter 4x6 = 24, union 72 - 24 = 48: loss 1/2.
    ratio 1 is the plain IoU loss 1 - 1/3."""
    a, b = [0, 0, 4, 4], [2, 0, 6, 4]
    assert _one("inner-iou", a, b, ratio=0.5) == pytest.approx(1.0, rel=1e-6)
    assert _one("inner-iou", a, b, ratio=1.5) == pytest.approx(0.5, rel=1e-6)
    assert _one("inner-iou", a, b, ratio=1.0) == pytest.approx(2 / 3, rel=1e-6)
    assert losses.spec("inner-iou").defaults["ratio"] == 0.75


def test_focaler_iou_closed_form():
    """IoU 1/2 ([0,0,2,2] vs [0,0,4,2]): default [0, 0.95] gives 1 - 0.5/0.95; [0.2, 0.8]
    gives 1 - 0.3/0.6 = 1/2; IoU 0.97 (> u) gives 0, with no gradient; IoU below d gives 1."""
    a, b = [0, 0, 2, 2], [0, 0, 4, 2]
    assert _one("focaler-iou", a, b) == pytest.approx(1 - 0.5 / 0.95, rel=1e-6)
    assert _one("focaler-iou", a, b, d=0.2, u=0.8) == pytest.approx(0.5, rel=1e-6)
    assert _one("focaler-iou", a, b, d=0.6, u=0.8) == 1.0
    assert _one("focaler-iou", [0, 0, 100, 1], [0, 0, 97, 1]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        losses.get_loss("focaler-iou", d=0.5, u=0.5)(torch.zeros(1, 4), torch.zeros(1, 4))


def test_shape_iou_closed_form():
    """scale 0: [0,0,2,2] vs [1,0,3,2]: IoU 1/3, ww = hh = 1, dx^2 = 1, c^2 = 9 + 4: L = 2/3 + 1/13.
    scale 1: [0,0,2,4] vs [1,0,3,4] (target 2x4): ww = 2*2/6 = 2/3, hh = 2*4/6 = 4/3; IoU 4/12;
    dx^2 = 1, c^2 = 9 + 16 = 25: distance hh/25 = 4/75; same sizes: shape 0. L = 2/3 + 4/75 = 0.72."""
    assert _one("shape-iou", [0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(29 / 39, rel=1e-6)
    assert _one("shape-iou", [0, 0, 2, 4], [1, 0, 3, 4], scale=1.0) == pytest.approx(0.72, rel=1e-6)


def test_piou_closed_form():
    """[0,0,2,2] vs [1,0,3,2] (target 2x2): edge distances 1, 1, 0, 0: P = (2/2 + 0)/4 = 1/4;
    L_PIoU = 1 - 1/3 + 1 - e^(-1/16) = 0.7272536; q = e^(-1/4), x = 1.3 q = 1.0124410,
    u = 3 x e^(-x^2) = 1.0897407; L_PIoUv2 = u L_PIoU = 0.7925178. Identical boxes: P = 0, q = 1,
    u(1.3) = 0.72 but L_PIoU ~ 0, so the loss is ~0."""
    assert _one("piou", [0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(0.7272536038531909, rel=1e-6)
    assert _one("piou-v2", [0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(0.7925178197893711, rel=1e-6)
    assert _one("piou-v2", [0, 0, 2, 2], [0, 0, 2, 2]) == pytest.approx(0.0, abs=1e-7)


def test_wiou_v1_closed_form():
    """[0,0,2,2] vs [1,0,3,2]: rho^2 = 1, enclosing 3x2: Wg^2 + Hg^2 = 13; L_IoU = 2/3.
    L_v1 = e^(1/13) * 2/3 = 0.7199727."""
    assert _one("wiou-v1", [0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(math.exp(1 / 13) * 2 / 3, rel=1e-6)


# --------------------------------------------------------------------------------------
# Wise-IoU: the running mean and the focusing coefficients


def test_wiou_defaults_are_the_references():
    assert WIOU_MOMENTUM == pytest.approx(1 - 0.5 ** (1 / 7000))
    assert WIOU_MOMENTUM == pytest.approx(9.9016e-5, rel=1e-4)
    assert losses.spec("wiou-v3").defaults == {"alpha": 1.9, "delta": 3.0, "momentum": WIOU_MOMENTUM}
    assert losses.spec("wiou-v2").defaults == {"gamma": 0.5, "momentum": WIOU_MOMENTUM}
    for name in ("wiou-v2", "wiou-v3"):
        s = losses.spec(name)
        assert s.stateful and s.detaches and s.similarity == "iou"
    assert not losses.spec("wiou-v1").stateful


@pytest.mark.parametrize("name", ["wiou-v2", "wiou-v3"])
def test_wiou_running_mean_updates_in_train_not_in_eval(name):
    pred, target = _tensors()
    pred, target = pred.detach(), target.detach()
    batch_mean = losses.get_loss("iou")(pred, target).mean()  # mean of L_IoU = 1 - IoU
    loss = losses.get_loss(name, momentum=0.25)
    assert loss.state == {}
    loss(pred, target)  # starts from 1.0 as the reference, updates before use
    first = 0.75 * 1.0 + 0.25 * batch_mean
    mean = loss.state["iou_mean"]
    assert mean.dim() == 0 and mean.device == pred.device and not mean.requires_grad
    assert mean.item() == pytest.approx(first.item(), rel=1e-12)

    loss.eval()
    out_eval = loss(pred, target)
    assert loss.state["iou_mean"].item() == pytest.approx(first.item(), rel=1e-12)  # frozen
    assert "frozen" not in loss.state
    # eval uses the stored mean: equals a direct frozen call
    direct = losses.spec(name).fn(pred, target, state={"iou_mean": mean, "frozen": True})
    assert torch.allclose(out_eval, direct)

    loss.train()
    loss(pred, target)
    second = 0.75 * first + 0.25 * batch_mean
    assert loss.state["iou_mean"].item() == pytest.approx(second.item(), rel=1e-12)


def test_wiou_frozen_state_and_empty_batch_do_not_update():
    fn = losses.spec("wiou-v3").fn
    pred, target = _tensors()
    state = {"iou_mean": torch.tensor(0.4, dtype=torch.float64), "frozen": True}
    fn(pred, target, state=state)
    assert state["iou_mean"].item() == 0.4
    # an empty batch leaves the mean alone and still backpropagates
    loss = losses.get_loss("wiou-v3", momentum=0.5)
    loss(pred.detach(), target.detach())
    before = loss.state["iou_mean"].clone()
    empty = torch.zeros(0, 4, requires_grad=True)
    out = loss(empty, torch.zeros(0, 4))
    out.sum().backward()
    assert out.shape == (0,) and torch.equal(loss.state["iou_mean"], before)
    # default momentum: one step from the initial 1.0
    loss = losses.get_loss("wiou-v2")
    p, t = pred.detach(), target.detach()
    loss(p, t)
    m = WIOU_MOMENTUM
    expected = (1 - m) * 1.0 + m * losses.get_loss("iou")(p, t).mean().item()
    assert loss.state["iou_mean"].item() == pytest.approx(expected, rel=1e-12)


def test_wiou_v3_focusing_coefficient_is_non_monotonic():
    """r(beta) = beta / (delta alpha^(beta - delta)), alpha 1.9, delta 3 (the paper's Fig.):
    r(delta) = 1; r(0) = 0; the maximum is at beta = 1/ln(alpha) = 1.558 with
    r = alpha^delta / (delta e ln alpha) = 1.3104; r decreases beyond it and tends to 0."""
    beta = torch.linspace(0, 20, 2001, dtype=torch.float64)
    r = focusing_v3(beta, 1.9, 3.0)
    assert focusing_v3(torch.tensor(3.0, dtype=torch.float64), 1.9, 3.0).item() == pytest.approx(1.0)
    assert r[0].item() == 0.0
    peak = int(r.argmax())
    assert beta[peak].item() == pytest.approx(1 / math.log(1.9), abs=0.01)
    assert r.max().item() == pytest.approx(1.9**3 / (3 * math.e * math.log(1.9)), rel=1e-4)
    assert bool((r[1 : peak + 1].diff() > 0).all()) and bool((r[peak:].diff() < 0).all())
    assert r[-1].item() < 1e-3
    assert focusing_v3(torch.tensor(1e9), 1.9, 3.0).item() == 0.0  # no inf/inf


def test_wiou_focusing_through_the_loss():
    """With the mean frozen at m: v2 / v1 = (L_IoU / m)^0.5 (monotonic in L_IoU); v3 / v1 = 1
    where L_IoU = delta * m, and v3 gives the mid-quality box more weight than both a
    better and a much worse box (non-monotonic)."""
    target = torch.tensor([[0.0, 0, 10, 10]] * 3, dtype=torch.float64)
    pred = torch.tensor([[0.5, 0, 10.5, 10], [3.0, 0, 13, 10], [8.0, 0, 18, 10]], dtype=torch.float64)
    l_iou = losses.get_loss("iou")(pred, target)
    v1 = losses.get_loss("wiou-v1")(pred, target)
    mean = 0.3  # beta = L_IoU / mean = 0.32, 1.54, 2.96 (L_IoU = 1/10.5, 6/13, 16/18)
    frozen = {"iou_mean": torch.tensor(mean, dtype=torch.float64), "frozen": True}
    v2 = losses.spec("wiou-v2").fn(pred, target, state=dict(frozen))
    assert torch.allclose(v2 / v1, (l_iou / mean).sqrt())
    v3 = losses.spec("wiou-v3").fn(pred, target, state=dict(frozen))
    r = v3 / v1
    assert r[1] > r[0] and r[1] > r[2]  # r = 0.59, 1.31, 1.00: the mid-quality box gets most
    at_delta = {"iou_mean": (l_iou[1] / 3.0).detach(), "frozen": True}
    v3_at_delta = losses.spec("wiou-v3").fn(pred[1:2], target[1:2], state=at_delta)
    assert v3_at_delta.item() == pytest.approx(v1[1].item(), rel=1e-12)


# --------------------------------------------------------------------------------------
# Registry contract, for these losses (the generic test lives in test_loss_contract.py)


DEGENERATE = {
    "zero width": ([1, 1, 1, 3], [0, 0, 2, 2]),
    "zero height": ([0, 1, 2, 1], [0, 0, 2, 2]),
    "point vs box": ([1, 1, 1, 1], [0, 0, 2, 2]),
    "point vs same point": ([1, 1, 1, 1], [1, 1, 1, 1]),
    "box vs point": ([0, 0, 2, 2], [1, 1, 1, 1]),
    "zero-width pair": ([1, 0, 1, 2], [1, 0, 1, 3]),
    "identical": ([0, 0, 2, 2], [0, 0, 2, 2]),
    "disjoint": ([0, 0, 1, 1], [5, 5, 6, 6]),
    "huge": ([1e5, 1e5, 2e5, 2.5e5], [1.1e5, 0.9e5, 2.2e5, 2.4e5]),
    "huge identical": ([1e5, 1e5, 2e5, 2.5e5], [1e5, 1e5, 2e5, 2.5e5]),
    "tiny": ([1e-4, 1e-4, 3e-4, 2e-4], [2e-4, 1e-4, 4e-4, 3e-4]),
    "tiny identical": ([1e-4, 1e-4, 3e-4, 2e-4], [1e-4, 1e-4, 3e-4, 2e-4]),
    "inverted": ([2, 2, 0, 0], [0, 0, 2, 2]),
    "same centre": ([0, 0, 4, 2], [1, -1, 3, 3]),
}


@pytest.mark.parametrize("name", OURS)
def test_finite_values_and_gradients_on_degenerate_boxes_float32(name):
    pred = torch.tensor([p for p, _ in DEGENERATE.values()], dtype=torch.float32, requires_grad=True)
    target = torch.tensor([t for _, t in DEGENERATE.values()], dtype=torch.float32, requires_grad=True)
    loss = losses.get_loss(name)
    value = loss(pred, target)
    value.sum().backward()
    bad = [k for k, ok in zip(DEGENERATE, torch.isfinite(value)) if not ok]
    assert not bad, f"{name}: non-finite value for {bad}"
    for grad in (pred.grad, target.grad):
        bad = [k for k, ok in zip(DEGENERATE, torch.isfinite(grad).all(-1)) if not ok]
        assert not bad, f"{name}: non-finite gradient for {bad}"


@pytest.mark.parametrize("name", OURS)
def test_shape_minimum_and_empty_input(name):
    pred, target = _tensors()
    pred, target = pred.detach(), target.detach()
    loss = losses.get_loss(name)
    batched = loss(pred.reshape(13, 1, 4).expand(13, 2, 4), target.reshape(13, 1, 4).expand(13, 2, 4))
    assert batched.shape == (13, 2)
    at_target = losses.get_loss(name)(target, target)
    elsewhere = losses.get_loss(name)(pred, target)
    # identical boxes give ~eps / area (IoU = inter / (union + eps)), not exactly 0; and
    # focal-eiou is exactly 0 on disjoint boxes (weight IoU^gamma = 0): compare up to 1e-6
    assert bool((at_target.abs() < 1e-6).all())
    assert bool((at_target <= elsewhere + 1e-6).all())
    near = losses.get_loss(name)(target + 0.05 * torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64), target)
    assert bool((at_target <= near).all())  # focaler-iou is flat (0) above IoU u = 0.95
    empty = torch.zeros(0, 4, requires_grad=True)
    out = loss(empty, torch.zeros(0, 4))
    out.sum().backward()
    assert out.shape == (0,) and empty.grad is not None and empty.grad.shape == (0, 4)


@pytest.mark.parametrize("name", [n for n in OURS if not losses.spec(n).detaches])
def test_gradcheck_float64(name):
    pred, target = _tensors(PAIRS[::3])
    loss = losses.get_loss(name)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b), (pred, target))


@pytest.mark.parametrize("name", OURS)
def test_no_host_sync_runs_on_meta_tensors(name):
    """A ``.item()`` or a Python branch on a tensor value would raise on the meta device."""
    s = losses.spec(name)
    pred, target = torch.rand(5, 4, device="meta"), torch.rand(5, 4, device="meta")
    kwargs = {"state": {}} if s.stateful else {}
    out = s.fn(pred, target, **kwargs)
    assert out.shape == (5,) and out.device.type == "meta"
    if s.stateful:
        assert kwargs["state"]["iou_mean"].device.type == "meta"


def test_similarity_kinds():
    kinds = {n: losses.spec(n).similarity for n in OURS}
    for n in ("focal-eiou", "focaler-iou", "piou-v2", "wiou-v1", "wiou-v2", "wiou-v3"):
        assert kinds[n] == "iou"
    for n in ("eiou", "siou", "alpha-iou", "alpha-ciou", "mpdiou", "inner-iou", "shape-iou", "piou"):
        assert kinds[n] == "one_minus_loss"
    # the objectness target of a focusing-weighted loss is the plain IoU
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[0.0, 0, 4, 2]])
    assert losses.get_loss("wiou-v3").similarity(a, b).item() == pytest.approx(0.5, rel=1e-6)
