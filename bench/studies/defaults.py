"""The studies' names, default losses and default parameters: the one place they are written.

No torch import: the CLI (``--help`` shows these defaults), the grid config and the grid
expansion read them without loading torch. The study functions take their signature
defaults from here.
"""

from __future__ import annotations

STUDIES = ("convergence", "gradients", "corner-center")

# convergence: the DIoU paper's simulation (Zheng et al., AAAI 2020, test_1715k.m)
CONVERGENCE_LOSSES = ("iou", "giou", "diou", "ciou", "sca")
POINTS = 5000  # anchor centres in the disc; cases = points x 343
ITERATIONS = 200  # regression steps T
SCHEDULE = "0.1:160,0.01:180,0.001"  # step size 'lr:until,...,lr' (t counts from 1)
DTYPE = "float32"  # state precision; error sums are float64
ENGINES = ("auto", "kernel", "compiled", "autograd")
ENGINE = "auto"

# gradients: the SCALoss paper's Fig. 1 left
GRADIENT_LOSSES = ("sca", "so", "giou", "diou", "iou")
PAIRS_PER_BIN = 1000
BINS = 10

# corner-center: the SCALoss paper's Fig. 1 right
CORNER_CENTER_LOSSES = ("iou+cd", "iou+center")
VARIANT_NAMES = {"iou+cd": "corner", "iou+center": "center"}
CORNER_CENTER_ITERATIONS = 1500
CORNER_CENTER_LR = 0.01
CORNER_CENTER_DTYPE = "float64"
START_IOU = 0.05
MAX_START_IOU = 0.13  # the lowest IoU every start shape reaches when concentric is above it
DIRECTIONS = 8

DTYPES = ("float32", "float64")
DEVICE = "cpu"
SEED = 0

DEFAULT_LOSSES = {
    "convergence": CONVERGENCE_LOSSES,
    "gradients": GRADIENT_LOSSES,
    "corner-center": CORNER_CENTER_LOSSES,
}

STUDY_OPTIONS = {
    "convergence": ("points", "iterations", "schedule", "dtype", "engine", "threads"),
    "gradients": ("pairs_per_bin", "bins"),
    "corner-center": ("iterations", "lr", "start_iou", "directions", "dtype"),
}
"""study -> the keyword options of its function (besides losses, seed, device, progress)."""
