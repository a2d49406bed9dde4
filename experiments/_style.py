"""One look for every figure the experiments draw: ``plt = pyplot()``, then ``save(fig, path)``.

``pyplot()`` selects the non-interactive Agg backend (figures are only written to files) and
applies the shared style: a white background, a light grid, readable font sizes, no top and
right spines, and a colour cycle that stays distinct in print. ``save`` writes a PNG at
``DPI`` (150: sharp in a browser at full width) with tight bounding boxes, and closes the figure.
"""

from __future__ import annotations

import pathlib

DPI = 150

STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.framealpha": 0.85,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "image.cmap": "viridis",
    # Okabe–Ito: distinguishable in colour-blind vision and in greyscale print.
    "axes.prop_cycle": None,  # set in pyplot(), where cycler is importable
}
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend with the experiments' shared style applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    plt.rcParams.update({**STYLE, "axes.prop_cycle": cycler(color=COLORS)})
    return plt


def save(fig, path: str | pathlib.Path) -> pathlib.Path:
    """Write ``fig`` as a PNG at ``DPI`` to ``path``, close it, and return the path."""
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
