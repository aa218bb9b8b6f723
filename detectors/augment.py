"""Image and box augmentations of the reference trainer, on numpy arrays and PIL (no OpenCV).

Boxes are ``[n, 4]`` float32 xyxy in pixels of the image they belong to. Randomness comes from
a ``numpy.random.Generator`` passed in, so a sample is a pure function of its seed.

- ``letterbox``: resize keeping the aspect ratio, pad to a square with grey 114;
- ``mosaic``: four images around a random centre on a 2s x 2s canvas (REFERENCES 4: mosaic 1.0);
- ``random_affine``: rotation, scale, shear, perspective, translation (hyp degrees, scale,
  shear, perspective, translate), boxes mapped by their corners and filtered as the reference
  does (width and height > 2 px, area kept > 10 %, aspect < 20);
- ``augment_hsv``: saturation and value gains exactly as the HSV reference (S and V scaled,
  clipped, hue kept), hue as a rotation about the grey axis by up to hsv_h * 180 degrees (the
  reference multiplies the hue by 1 +- hsv_h: the same size of change, computed in RGB
  without a colour-space round trip);
- flips.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

GREY = (114, 114, 114)


def resize_long_side(img: Image.Image, size: int) -> tuple[Image.Image, float]:
    """Resize so the long side is ``size`` (up or down); returns the image and the ratio."""
    w, h = img.size
    r = size / max(w, h)
    if r != 1:
        img = img.resize((max(1, round(w * r)), max(1, round(h * r))), Image.Resampling.BILINEAR)
    return img, r


def letterbox(img: Image.Image, size: int) -> tuple[Image.Image, tuple[float, float]]:
    """Pad an image whose long side is ``size`` to ``size x size``, centred; returns (image, (left, top))."""
    w, h = img.size
    if (w, h) == (size, size):
        return img, (0.0, 0.0)
    left, top = (size - w) // 2, (size - h) // 2
    canvas = Image.new("RGB", (size, size), GREY)
    canvas.paste(img, (left, top))
    return canvas, (float(left), float(top))


def mosaic(images: list[Image.Image], boxes: list[np.ndarray], size: int, rng: np.random.Generator):
    """Four images around a centre drawn in [s/2, 3s/2]^2 of a 2s x 2s canvas.

    Image 0 goes up-left of the centre, 1 up-right, 2 down-left, 3 down-right; boxes are
    shifted with their image and clipped to the canvas. Returns (canvas, boxes).
    """
    s2 = 2 * size
    xc, yc = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, size=2))
    canvas = Image.new("RGB", (s2, s2), GREY)
    out = []
    for k, (img, b) in enumerate(zip(images, boxes)):
        w, h = img.size
        x0 = xc - w if k in (0, 2) else xc
        y0 = yc - h if k in (0, 1) else yc
        # crop to the image's own quadrant so it never covers a neighbour
        qx1, qy1 = (0, 0) if k == 0 else (xc, 0) if k == 1 else (0, yc) if k == 2 else (xc, yc)
        qx2, qy2 = (xc, yc) if k == 0 else (s2, yc) if k == 1 else (xc, s2) if k == 2 else (s2, s2)
        cx1, cy1 = max(qx1 - x0, 0), max(qy1 - y0, 0)
        cx2, cy2 = min(qx2 - x0, w), min(qy2 - y0, h)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        piece = img if (cx1, cy1, cx2, cy2) == (0, 0, w, h) else img.crop((cx1, cy1, cx2, cy2))
        canvas.paste(piece, (x0 + cx1, y0 + cy1))
        if len(b):
            shifted = b + np.array([x0, y0, x0, y0], dtype=np.float32)
            lo = np.array([x0 + cx1, y0 + cy1] * 2, dtype=np.float32)
            hi = np.array([x0 + cx2, y0 + cy2] * 2, dtype=np.float32)
            out.append(np.clip(shifted, lo, hi))
    all_boxes = np.concatenate(out) if out else np.zeros((0, 4), np.float32)
    return canvas, all_boxes


def affine_matrix(
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    rng: np.random.Generator,
    *,
    degrees: float,
    translate: float,
    scale: float,
    shear: float,
    perspective: float,
) -> tuple[np.ndarray, float]:
    """The 3x3 map from input to output pixels, and the drawn scale.

    M = T S R P C: centre the input at the origin, perspective, rotate and scale, shear,
    translate to the output centre +- translate of its size.
    """
    w, h = in_size
    ow, oh = out_size
    C = np.eye(3)
    C[0, 2], C[1, 2] = -w / 2, -h / 2
    P = np.eye(3)
    P[2, 0], P[2, 1] = rng.uniform(-perspective, perspective, size=2) if perspective else (0.0, 0.0)
    angle = math.radians(rng.uniform(-degrees, degrees)) if degrees else 0.0
    s = rng.uniform(1 - scale, 1 + scale) if scale else 1.0
    R = np.eye(3)
    R[:2, :2] = [[s * math.cos(angle), -s * math.sin(angle)], [s * math.sin(angle), s * math.cos(angle)]]
    S = np.eye(3)
    if shear:
        S[0, 1], S[1, 0] = (math.tan(math.radians(v)) for v in rng.uniform(-shear, shear, size=2))
    T = np.eye(3)
    tx, ty = rng.uniform(0.5 - translate, 0.5 + translate, size=2) if translate else (0.5, 0.5)
    T[0, 2], T[1, 2] = tx * ow, ty * oh
    return T @ S @ R @ P @ C, s


def warp(img: Image.Image, M: np.ndarray, out_size: tuple[int, int]) -> Image.Image:
    """Resample ``img`` so that output pixel p shows input pixel M^-1 p (bilinear, grey fill)."""
    inv = np.linalg.inv(M)
    if M[2, 0] == 0 and M[2, 1] == 0:
        coeffs = tuple((inv[:2] / inv[2, 2]).reshape(-1).tolist())
        return img.transform(out_size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=GREY)
    inv = inv / inv[2, 2]
    coeffs = tuple(inv.reshape(-1)[:8].tolist())
    return img.transform(out_size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR, fillcolor=GREY)


def transform_boxes(boxes: np.ndarray, M: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Map boxes by their four corners, take the enclosing box, clip to the output."""
    if not len(boxes):
        return boxes.reshape(0, 4).astype(np.float32)
    n = len(boxes)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    mapped = corners @ M.T
    xy = (mapped[:, :2] / mapped[:, 2:3]).reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    out = np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, out_size[0])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, out_size[1])
    return out.astype(np.float32)


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr=2.0, ar_thr=20.0, area_thr=0.1, eps=1e-16) -> np.ndarray:
    """Keep boxes still > wh_thr px wide and high, with > area_thr of their (scaled) area, aspect < ar_thr."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def random_affine(img: Image.Image, boxes: np.ndarray, classes: np.ndarray, out_size: int, rng: np.random.Generator, hyp: dict):
    """Warp to ``out_size`` square; returns (image, boxes, classes) with lost boxes dropped."""
    M, s = affine_matrix(
        img.size,
        (out_size, out_size),
        rng,
        degrees=hyp["degrees"],
        translate=hyp["translate"],
        scale=hyp["scale"],
        shear=hyp["shear"],
        perspective=hyp["perspective"],
    )
    img = warp(img, M, (out_size, out_size))
    new = transform_boxes(boxes, M, (out_size, out_size))
    if len(new):
        keep = box_candidates(boxes * s, new)
        new, classes = new[keep], classes[keep]
    return img, new, classes


_GREY_AXIS = np.ones(3) / math.sqrt(3)


def _hue_rotation(angle: float) -> np.ndarray:
    """RGB rotation about the grey axis (Rodrigues): a hue shift that keeps grey grey."""
    k = _GREY_AXIS
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * (K @ K)


def augment_hsv(arr: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float) -> np.ndarray:
    """Random hue, saturation and value gains on an HWC uint8 RGB array; returns CHW uint8."""
    planar = np.ascontiguousarray(arr.transpose(2, 0, 1))
    if not (hgain or sgain or vgain):
        return planar
    gh, gs, gv = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    x = planar.reshape(3, -1).astype(np.float32)
    if gh != 1:
        x = _hue_rotation((gh - 1) * math.pi).astype(np.float32) @ x
        np.clip(x, 0, 255, out=x)
    v = np.maximum(np.maximum(x[0], x[1]), x[2])
    if gs != 1:
        lo = np.minimum(np.minimum(x[0], x[1]), x[2])
        # S' = min(S * gs, 1) with H and V kept: each channel's distance below V scales by k
        k = np.minimum(gs, v / np.maximum(v - lo, 1e-3))
        x = v - k * (v - x)
    if gv != 1:
        x *= np.minimum(gv, 255.0 / np.maximum(v, 1e-3))  # V' = min(V * gv, 255), hue kept
    x += 0.5
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8).reshape(planar.shape)


def mixup(a: tuple, b: tuple, rng: np.random.Generator) -> tuple:
    """Blend two (image array, boxes, classes) samples with ratio ~ Beta(32, 32); keep all boxes."""
    r = rng.beta(32.0, 32.0)  # images HWC uint8
    img = (a[0].astype(np.float32) * r + b[0].astype(np.float32) * (1 - r)).astype(np.uint8)
    return img, np.concatenate((a[1], b[1])), np.concatenate((a[2], b[2]))
