"""The one figure style of scabench: seaborn theme, a loss's colour, line styles, saving.

Every figure (training results and synthetic studies) goes through these, so a loss has the
same colour everywhere and figures stay readable printed in grey (colour *and* line style).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scabench.results import atomic_path

FORMATS = ("png", "pdf")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def set_style() -> None:
    """Agg backend and the seaborn paper theme (colour-blind palette, bold titles)."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.25,
                  rc={"lines.linewidth": 1.8, "axes.titleweight": "bold", "savefig.bbox": "tight"})


def palette(names: list[str]) -> dict[str, Any]:
    """A colour per name, in order of first appearance (colour-blind palette up to 10)."""
    import seaborn as sns

    colours = sns.color_palette("colorblind", 10) if len(names) <= 10 else sns.color_palette("husl", len(names))
    return {name: colours[i] for i, name in enumerate(names)}


def save(fig: Any, out: Path, name: str) -> list[Path]:
    """Write ``out/name.png`` and ``out/name.pdf`` atomically, close the figure, return the paths."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = out / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=200, format=ext)
        paths.append(path)
    plt.close(fig)
    return paths
