#!/usr/bin/env python
"""Plot the per-category EFL statistics g_j and gamma_j of a checkpoint, sorted by frequency.

Reads a detectron2 checkpoint (a ``.pth`` with a ``"model"`` state dict; a bare state dict works
too), finds every loss with gradient statistics (state-dict keys ending in ``pos_neg``) and draws,
per loss, g_j = pos_neg and gamma_j = gamma_b + scale * (1 - g_j) for every category, ordered from
the most to the least frequent training category. Frequencies come from a LVIS-format training
json (``--json``: annotations counted per category; the LVIS r/c/f letters colour the points);
without it categories are ordered by their accumulated positive gradient ``pos_grad``, which is
what the checkpoint itself knows about how often each category was seen.

    python tools/plot_efl_stats.py output/model_final.pth --json datasets/lvis/lvis_v1_train.json \
        --output efl_stats.png

A checkpoint that is missing, a directory, unreadable, not a checkpoint or without EFL
statistics is one ``error:`` line on stderr and exit status 2, before anything else is read.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import numpy as np

from efl_d2.categories import (
    FREQUENCY_COLORS,
    FREQUENCY_NAMES,
    category_records,
    count_instances,
    frequency_order,
)
from efl_d2.data.datasets import read_json
from efl_d2.evaluation.plots import LEGEND_ORDER, frequency_colors
from efl_d2.losses import efl_focusing_factor


def _fail(message: str) -> NoReturn:
    """``error: <message>`` on stderr, exit status 2 (the SystemExit's text is the line too)."""
    print(f"error: {message}", file=sys.stderr)
    exit_ = SystemExit(f"error: {message}")
    exit_.code = 2
    raise exit_


def load_statistics(checkpoint: str) -> dict[str, dict[str, np.ndarray]]:
    """``{loss prefix: {"pos_grad", "neg_grad", "pos_neg"}}`` (float64 arrays) of a checkpoint."""
    from efl_d2.checkpoint import CheckpointReadError, check_checkpoint_file, read_loss_statistics

    try:
        check_checkpoint_file(checkpoint)
        stats = read_loss_statistics(checkpoint)
    except (CheckpointReadError, RuntimeError, OSError) as e:
        _fail(f"{e} (expected a detectron2 .pth with a 'model' state dict of tensors)")
    out = {name: {k: v.numpy() for k, v in s.items()} for name, s in stats.items()}
    if not out:
        _fail(
            f"{checkpoint} has no EFL statistics (no state-dict key ends in 'pos_neg'): "
            "was it trained with EqualizedFocalLoss / EQLv2FocalLoss?"
        )
    return out


def training_counts(lvis_json: str) -> tuple[np.ndarray, list[str]]:
    """(C,) annotations and (C,) LVIS frequency letter of every category of a LVIS-format json,
    by class index (sorted ids); a category without a frequency gets "?" (grey)."""
    data = read_json(lvis_json)
    cats = category_records(data["categories"], allow_unknown=True)
    instances = count_instances(data.get("annotations", []))
    counts = np.array([instances.get(c["category_id"], 0) for c in cats], dtype=np.int64)
    return counts, [c["frequency"] for c in cats]


def compute_plot_data(
    stats: dict[str, np.ndarray],
    counts: np.ndarray | None = None,
    *,
    gamma_b: float = 2.0,
    scale: float = 8.0,
) -> dict[str, np.ndarray]:
    """Arrays to plot for one loss.

    Args:
        stats: ``{"pos_neg": (C,), "pos_grad": (C,) optional}`` of one loss.
        counts: (C,) training frequency of each category, or None to use ``pos_grad``.

    Returns:
        ``order`` (C,) class indices from most to least frequent, and ``g``, ``gamma``, ``key``
        (the sort key) in that order.
    """
    g = np.asarray(stats["pos_neg"], dtype=np.float64)
    key = counts if counts is not None else stats.get("pos_grad", np.zeros_like(g))
    key = np.asarray(key, dtype=np.float64)
    if key.shape != g.shape:
        _fail(
            f"the json has {key.shape[0]} categories but the checkpoint's loss has {g.shape[0]}: "
            "pass the training json of this checkpoint's dataset"
        )
    order = frequency_order(key)
    gamma = efl_focusing_factor(g, gamma_b=gamma_b, scale=scale)
    return {"order": order, "g": g[order], "gamma": gamma[order], "key": key[order]}


def plot(
    panels: dict[str, dict[str, np.ndarray]],
    output: str,
    *,
    freq_letters: list[str] | None = None,
    key_label: str = "",
) -> None:
    import matplotlib.pyplot as plt  # the backend is main's choice (Agg)

    fig, axes = plt.subplots(2, len(panels), figsize=(7 * len(panels), 6), squeeze=False)
    for col, (name, data) in enumerate(panels.items()):
        letters = (
            [freq_letters[i] for i in data["order"]] if freq_letters else ["?"] * len(data["g"])
        )
        colors = frequency_colors(letters)
        x = np.arange(len(data["g"]))
        for row, (field, label) in enumerate((("g", "g_j"), ("gamma", "gamma_j"))):
            ax = axes[row][col]
            ax.scatter(x, data[field], s=4, c=colors)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0][col].set_title(name)
        axes[1][col].set_xlabel(f"category rank ({key_label})")
    if freq_letters:
        for letter in LEGEND_ORDER:
            axes[0][0].scatter(
                [], [], s=10, c=FREQUENCY_COLORS[letter], label=FREQUENCY_NAMES[letter]
            )
        axes[0][0].legend(loc="best")
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    parser = argparse.ArgumentParser(description="Plot EFL per-category g_j and gamma_j.")
    parser.add_argument("checkpoint", help="detectron2 checkpoint (.pth)")
    parser.add_argument("--json", help="LVIS-format training json (category frequencies)")
    parser.add_argument("--output", default="efl_stats.png", help="PNG to write")
    parser.add_argument("--gamma-b", type=float, default=2.0, help="EFL gamma_b")
    parser.add_argument("--scale", type=float, default=8.0, help="EFL scale factor s")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # a file-writing tool: no display needed

    stats = load_statistics(args.checkpoint)  # first: a bad checkpoint fails before the json
    counts = letters = None
    key_label = "by accumulated positive gradient"
    if args.json:
        counts, letters = training_counts(args.json)
        key_label = "by training annotations"
    panels = {
        name: compute_plot_data(s, counts, gamma_b=args.gamma_b, scale=args.scale)
        for name, s in stats.items()
    }
    plot(panels, args.output, freq_letters=letters, key_label=key_label)
    print(f"wrote {args.output} ({', '.join(panels)})")
    return panels


if __name__ == "__main__":
    main(sys.argv[1:])
