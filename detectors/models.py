"""The YOLOv3 family: yolov3-tiny, yolov3 and yolov3-spp, with width and depth multipliers.

Layer for layer the networks of ultralytics/yolov3 v9.6.0 (the base of the SCALoss authors'
code), written out as plain modules so a reader can follow them top to bottom (REFERENCES 4):
every convolution is Conv2d (no bias) + BatchNorm2d(eps=1e-3, momentum=0.03) + SiLU; at 80
classes and width = depth = 1 the parameter counts are 8,852,366 / 61,949,149 / 62,998,749.

``width`` scales every channel count (rounded up to a multiple of 8), ``depth`` every repeat
count above 1 (rounded, at least 1), as the reference's width/depth multiples do.

The detection head returns, in training mode, one raw tensor per level of shape
``[batch, anchors, ny, nx, 5 + classes]`` (x, y, w, h, objectness, classes; logits); in eval
mode the decoded ``[batch, boxes, 5 + classes]`` with xywh in input pixels and probabilities.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

# Anchors in pixels (w, h), one row per level from the finest stride to the coarsest.
ANCHORS: dict[str, list[list[tuple[float, float]]]] = {
    "yolov3-tiny": [
        [(10, 14), (23, 27), (37, 58)],  # P4/16
        [(81, 82), (135, 169), (344, 319)],  # P5/32
    ],
    "yolov3": [
        [(10, 13), (16, 30), (33, 23)],  # P3/8
        [(30, 61), (62, 45), (59, 119)],  # P4/16
        [(116, 90), (156, 198), (373, 326)],  # P5/32
    ],
}
ANCHORS["yolov3-spp"] = ANCHORS["yolov3"]
STRIDES: dict[str, tuple[int, ...]] = {"yolov3-tiny": (16, 32), "yolov3": (8, 16, 32), "yolov3-spp": (8, 16, 32)}
MODELS = tuple(ANCHORS)


def channels(c: int, width: float) -> int:
    """A channel count scaled by ``width`` and rounded up to a multiple of 8."""
    return int(math.ceil(c * width / 8) * 8)


def repeats(n: int, depth: float) -> int:
    return max(round(n * depth), 1) if n > 1 else n


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding) + BatchNorm2d + SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Residual(nn.Module):
    """1x1 conv to half the output channels, 3x3 conv back; adds the input when shapes allow."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True):
        super().__init__()
        hidden = int(c_out * 0.5)
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(hidden, c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class SPP(nn.Module):
    """Spatial pyramid pooling: max-pools of size 5, 9, 13 (stride 1) concatenated."""

    def __init__(self, c_in: int, c_out: int, kernels: Sequence[int] = (5, 9, 13)):
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.cv2 = Conv(hidden * (len(kernels) + 1), c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x, *(pool(x) for pool in self.pools)], 1))


def stack(c_in: int, c_out: int, n: int, shortcut: bool) -> nn.Sequential:
    return nn.Sequential(*(Residual(c_in if i == 0 else c_out, c_out, shortcut) for i in range(n)))


class Detect(nn.Module):
    """One 1x1 conv per level to anchors x (5 + classes) outputs; decodes boxes in eval mode.

    Decode (REFERENCES 4): xy = (2 sigmoid(t) - 0.5 + cell) * stride,
    wh = (2 sigmoid(t))^2 * anchor. ``anchors`` is kept in grid units per level.
    """

    def __init__(self, num_classes: int, anchors: Sequence[Sequence[Sequence[float]]], strides: Sequence[int], chs: Sequence[int]):
        super().__init__()
        self.nc = num_classes
        self.no = num_classes + 5
        self.nl = len(anchors)
        self.na = len(anchors[0])
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32))
        pixels = torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2)
        self.register_buffer("anchors", pixels / self.stride.view(-1, 1, 1))  # grid units
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in chs)
        self._grids: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.init_biases()

    def init_biases(self) -> None:
        """Objectness log(8 / (640 / s)^2) (8 objects per 640 image), classes log(0.6 / (nc - 0.99))."""
        with torch.no_grad():
            for conv, s in zip(self.m, self.stride.tolist()):
                b = conv.bias.view(self.na, self.no)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:] += math.log(0.6 / (self.nc - 0.99))

    def set_anchors(self, anchors_pixels: Tensor) -> None:
        """Replace the anchors (pixels, shape [levels, anchors, 2]), e.g. after k-means."""
        a = torch.as_tensor(anchors_pixels, dtype=torch.float32, device=self.anchors.device)
        self.anchors.copy_(a.view(self.nl, self.na, 2) / self.stride.view(-1, 1, 1))
        self._grids.clear()

    def anchors_pixels(self) -> Tensor:
        return self.anchors * self.stride.view(-1, 1, 1)

    def _grid(self, i: int, nx: int, ny: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (i, nx, ny, device, dtype)
        if key not in self._grids:
            ys, xs = torch.meshgrid(torch.arange(ny, device=device), torch.arange(nx, device=device), indexing="ij")
            cell = torch.stack((xs, ys), -1).view(1, 1, ny, nx, 2).to(dtype)
            anchor = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).to(device=device, dtype=dtype)
            self._grids[key] = (cell - 0.5, anchor)
        return self._grids[key]

    def forward(self, features: list[Tensor]) -> list[Tensor] | Tensor:
        raw = []
        for i, x in enumerate(features):
            bs, _, ny, nx = x.shape
            raw.append(self.m[i](x).view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        out = []
        for i, p in enumerate(raw):
            bs, _, ny, nx, _ = p.shape
            cell, anchor = self._grid(i, nx, ny, p.device, p.dtype)
            y = p.sigmoid()
            xy = (y[..., :2] * 2 + cell) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * anchor
            out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, self.no))
        return torch.cat(out, 1)


class YoloV3Tiny(nn.Module):
    """yolov3-tiny: a 7-conv backbone with max-pools, two detection levels (strides 16, 32)."""

    def __init__(self, num_classes: int = 80, width: float = 1.0, depth: float = 1.0, anchors=None):
        super().__init__()
        c = lambda n: channels(n, width)  # noqa: E731
        pool = lambda: nn.MaxPool2d(2, 2)  # noqa: E731
        self.backbone_p4 = nn.Sequential(
            Conv(3, c(16), 3), pool(),
            Conv(c(16), c(32), 3), pool(),
            Conv(c(32), c(64), 3), pool(),
            Conv(c(64), c(128), 3), pool(),
            Conv(c(128), c(256), 3),  # P4/16
        )
        self.backbone_p5 = nn.Sequential(
            pool(),
            Conv(c(256), c(512), 3),
            nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1),  # stride-1 pool keeps P5/32
            Conv(c(512), c(1024), 3),
            Conv(c(1024), c(256), 1),
        )
        self.head_p5 = Conv(c(256), c(512), 3)
        self.lateral = nn.Sequential(Conv(c(256), c(128), 1), nn.Upsample(scale_factor=2, mode="nearest"))
        self.head_p4 = Conv(c(128) + c(256), c(256), 3)
        self.detect = Detect(num_classes, anchors or ANCHORS["yolov3-tiny"], STRIDES["yolov3-tiny"], (c(256), c(512)))

    def forward(self, x: Tensor):
        p4 = self.backbone_p4(x)
        neck = self.backbone_p5(p4)
        out_p5 = self.head_p5(neck)
        out_p4 = self.head_p4(torch.cat((self.lateral(neck), p4), 1))
        return self.detect([out_p4, out_p5])


class YoloV3(nn.Module):
    """yolov3 (Darknet-53 backbone, three levels, strides 8/16/32); ``spp=True`` for yolov3-spp."""

    def __init__(self, num_classes: int = 80, width: float = 1.0, depth: float = 1.0, anchors=None, spp: bool = False):
        super().__init__()
        c = lambda n: channels(n, width)  # noqa: E731
        n = lambda k: repeats(k, depth)  # noqa: E731

        def stage(c_in: int, c_out: int, blocks: int) -> nn.Sequential:  # stride-2 conv + residuals
            return nn.Sequential(Conv(c(c_in), c(c_out), 3, 2), stack(c(c_out), c(c_out), n(blocks), True))

        self.stem = Conv(3, c(32), 3)
        self.stage1 = stage(32, 64, 1)
        self.stage2 = stage(64, 128, 2)
        self.stage3 = stage(128, 256, 8)  # P3/8
        self.stage4 = stage(256, 512, 8)  # P4/16
        self.stage5 = stage(512, 1024, 4)  # P5/32
        # P5 head: its 512-channel 1x1 output (or SPP) also feeds the P4 branch.
        self.p5_a = nn.Sequential(
            Residual(c(1024), c(1024), shortcut=False),
            SPP(c(1024), c(512)) if spp else Conv(c(1024), c(512), 1),
            Conv(c(512), c(1024), 3),
            Conv(c(1024), c(512), 1),
        )
        self.p5_out = Conv(c(512), c(1024), 3)
        self.p4_lateral = nn.Sequential(Conv(c(512), c(256), 1), nn.Upsample(scale_factor=2, mode="nearest"))
        self.p4_a = nn.Sequential(
            Residual(c(256) + c(512), c(512), shortcut=False),
            Residual(c(512), c(512), shortcut=False),
            Conv(c(512), c(256), 1),
        )
        self.p4_out = Conv(c(256), c(512), 3)
        self.p3_lateral = nn.Sequential(Conv(c(256), c(128), 1), nn.Upsample(scale_factor=2, mode="nearest"))
        self.p3_out = nn.Sequential(
            Residual(c(128) + c(256), c(256), shortcut=False),
            stack(c(256), c(256), n(2), False),
        )
        name = "yolov3-spp" if spp else "yolov3"
        self.detect = Detect(num_classes, anchors or ANCHORS[name], STRIDES[name], (c(256), c(512), c(1024)))

    def forward(self, x: Tensor):
        p3 = self.stage3(self.stage2(self.stage1(self.stem(x))))
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        a5 = self.p5_a(p5)
        a4 = self.p4_a(torch.cat((self.p4_lateral(a5), p4), 1))
        out_p3 = self.p3_out(torch.cat((self.p3_lateral(a4), p3), 1))
        return self.detect([out_p3, self.p4_out(a4), self.p5_out(a5)])


def build_model(
    name: str,
    num_classes: int = 80,
    width: float = 1.0,
    depth: float = 1.0,
    anchors: Sequence[Sequence[Sequence[float]]] | Tensor | None = None,
) -> nn.Module:
    """Build ``yolov3-tiny``, ``yolov3`` or ``yolov3-spp`` (random init, biases as the reference).

    ``anchors``: pixels, ``[levels][anchors per level][w, h]``; default the model's own.
    """
    if name not in MODELS:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(MODELS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not (width > 0 and depth > 0):
        raise ValueError(f"width and depth must be > 0, got width={width}, depth={depth}")
    if isinstance(anchors, Tensor):
        anchors = anchors.tolist()
    if anchors is not None and (len(anchors) != len(STRIDES[name]) or any(len(a) != 3 for a in anchors)):
        raise ValueError(f"{name} needs anchors shaped [{len(STRIDES[name])}][3][2], got {anchors}")
    if name == "yolov3-tiny":
        model = YoloV3Tiny(num_classes, width, depth, anchors)
    else:
        model = YoloV3(num_classes, width, depth, anchors, spp=name == "yolov3-spp")
    model.name = name
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
