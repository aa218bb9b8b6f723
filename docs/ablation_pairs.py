"""The ablation's questions as paired comparisons across its blocks, from its ``cells.csv``.

``scabench report`` compares every loss with the baseline of its own block (same objectness
target); the questions of issue 10 also need pairs across blocks and between two non-baseline
losses. Each line: the mean paired difference over shared seeds (A minus B, AP points) and its
95 % Student-t CI, marked ``*`` where it excludes 0 -- the report's statistics, reused.

    .venv/bin/python docs/ablation_pairs.py docs/results/ablation/cells.csv > docs/results/ablation/pairs.md
"""

from __future__ import annotations

import sys

import pandas as pd

from scabench.reports.statistics import excludes_zero, t_interval

METRICS = ("AP", "AP50", "AP65", "AP75", "AP80", "AP90")

# (question, A = (loss, obj_target), B = (loss, obj_target))
PAIRS = [
    ("SCA vs IoU, the paper's setting (objectness target = the loss's similarity)", ("sca", "loss"), ("iou", "loss")),
    ("SCA vs IoU, the box loss alone (objectness target = IoU for both)", ("sca", "iou"), ("iou", "iou")),
    ("SCA's objectness coupling: SCA with its own similarity vs with IoU as target", ("sca", "loss"), ("sca", "iou")),
    ("Null check: IoU with target 'loss' vs 'iou' (the same quantity)", ("iou", "loss"), ("iou", "iou")),
    ("Corner vs centre alignment: iou+cd vs iou+center (target IoU)", ("iou+cd", "iou"), ("iou+center", "iou")),
    ("Corner vs centre alignment: iou+cd vs iou+center (target loss)", ("iou+cd", "loss"), ("iou+center", "loss")),
    ("Side overlap alone vs IoU (target IoU)", ("so", "iou"), ("iou", "iou")),
    ("Corner distance alone vs IoU (target IoU)", ("cd", "iou"), ("iou", "iou")),
    ("SCA vs its side-overlap part alone (target IoU)", ("sca", "iou"), ("so", "iou")),
    ("alpha 0.25 vs 1 (target IoU)", ("sca(alpha=0.25)", "iou"), ("sca", "iou")),
    ("alpha 0.5 vs 1 (target IoU)", ("sca(alpha=0.5)", "iou"), ("sca", "iou")),
    ("alpha 2 vs 1 (target IoU)", ("sca(alpha=2)", "iou"), ("sca", "iou")),
]


def paired(cells: pd.DataFrame, a: tuple[str, str], b: tuple[str, str]) -> tuple[int, dict[str, str]]:
    """Seeds shared by A and B, and per metric ``mean [low, high]`` of A - B (``*``: excludes 0)."""
    pick = lambda loss, target: cells[(cells["loss"] == loss) & (cells["obj_target"] == target)].set_index("seed")  # noqa: E731
    left, right = pick(*a), pick(*b)
    seeds = sorted(set(left.index) & set(right.index))
    out = {}
    for metric in METRICS:
        mean, low, high = t_interval(left.loc[seeds, metric] - right.loc[seeds, metric])
        out[metric] = f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]" + ("*" if excludes_zero(low, high) else "")
    return len(seeds), out


def main(path: str) -> None:
    cells = pd.read_csv(path)
    rows = []
    for question, a, b in PAIRS:
        n, diffs = paired(cells, a, b)
        rows.append({"comparison (A - B)": question, "seeds": n, **diffs})
    print("Paired differences A - B over shared seeds (AP points): mean [95% Student t CI]; * the CI excludes 0.\n")
    print(pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True))


if __name__ == "__main__":
    main(sys.argv[1])
