"""Drawing by LVIS frequency group, on Axes the caller owns.

Nothing here selects a matplotlib backend or creates pyplot figures: a notebook keeps its inline
backend, and a command-line tool picks Agg in its own ``main``. Colours and names come from
:mod:`efl_d2.categories`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..categories import FREQUENCY_NAMES, UNKNOWN_FREQUENCY, frequency_color

__all__ = [
    "LEGEND_ORDER",
    "frequency_colors",
    "frequency_legend_handles",
    "plot_per_category_ap",
    "scatter_by_frequency",
]

#: Legend order: the plots sort categories from the most to the least frequent.
LEGEND_ORDER = ("f", "c", "r")


def frequency_colors(letters: Sequence[str]) -> list[str]:
    """(N,) colour of each group letter (the unknown colour for anything else)."""
    return [frequency_color(x) for x in letters]


def frequency_legend_handles(
    groups: Sequence[str] = LEGEND_ORDER, *, marker: str | None = None, markersize: float = 4
) -> list:
    """One legend handle per group, in its colour and with its name as label.

    Proxy artists are needed because an empty ``ax.bar([], [])`` draws its legend entry in the
    default colour, whatever colour it was given. ``marker=None`` gives patches (bars), a marker
    gives point markers (scatter plots).
    """
    if marker is None:
        return [Patch(color=frequency_color(g), label=FREQUENCY_NAMES[g]) for g in groups]
    return [
        Line2D(
            [],
            [],
            linestyle="none",
            marker=marker,
            markersize=markersize,
            color=frequency_color(g),
            label=FREQUENCY_NAMES[g],
        )
        for g in groups
    ]


def plot_per_category_ap(ax, *, ap: Sequence[float], frequency: Sequence[str], **legend_kw):
    """Bars of per-category AP in the given order, coloured by group, one legend entry per
    group present.

    Args:
        ax: a matplotlib Axes.
        ap: (K,) AP in [0, 1], NaN where undefined (drawn as 0).
        frequency: (K,) group letter of each bar.

    Returns:
        The ``BarContainer`` (heights in percent).
    """
    heights = np.nan_to_num(np.asarray(ap, dtype=np.float64) * 100)
    bars = ax.bar(np.arange(len(heights)), heights, color=frequency_colors(frequency))
    present = [g for g in (*LEGEND_ORDER, UNKNOWN_FREQUENCY) if g in set(frequency)]
    ax.legend(handles=frequency_legend_handles(present), **legend_kw)
    ax.set_ylabel("box AP")
    return bars


def scatter_by_frequency(
    ax, x, y, letters, *, marker: str = "o", markersize: float = 4, label_fmt: str = "{}"
) -> dict:
    """One markers-only ``plot`` line per frequency group (labelled with the group name through
    ``label_fmt``).

    Args:
        x, y: (N,) coordinates; letters: (N,) group letter of each point.

    Returns:
        ``{letter: (x, y)}`` read back from the drawn lines.
    """
    drawn = {}
    x, y, letters = np.asarray(x), np.asarray(y), np.asarray(letters)
    for letter in (*LEGEND_ORDER, UNKNOWN_FREQUENCY):
        mask = letters == letter
        if mask.any():
            line = ax.plot(
                x[mask],
                y[mask],
                linestyle="none",
                marker=marker,
                markersize=markersize,
                color=frequency_color(letter),
                label=label_fmt.format(FREQUENCY_NAMES[letter]),
            )[0]
            drawn[letter] = (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()))
    return drawn
