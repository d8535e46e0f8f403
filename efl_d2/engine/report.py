"""What a run reports: its LVIS AP table, whether its results are usable, the closing summary."""

from __future__ import annotations

import math
import os

__all__ = ["RunFailed", "check_results", "format_lvis_ap", "print_summary"]


class RunFailed(RuntimeError):
    """Training or evaluation finished without a usable result; the message says why."""


def format_lvis_ap(results: dict) -> str:
    """Table of AP, AP50, AP75, APr, APc, APf per task of evaluator results (a task with other
    metrics, e.g. AP-pool's, gets its own header line)."""
    cols = ["AP", "AP50", "AP75", "APr", "APc", "APf"]
    tasks = {t: m for t, m in results.items() if isinstance(m, dict)}
    width = max([6, *(len(t) + 2 for t in tasks)])
    lines, header = [], None
    for task, metrics in tasks.items():
        names = cols if "AP" in metrics else list(metrics)
        if names != header:
            lines.append(
                f"{'task':<{width}}" + "".join(f"{c:>{max(8, len(c) + 2)}}" for c in names)
            )
            header = names
        lines.append(
            f"{task:<{width}}"
            + "".join(f"{metrics.get(c, float('nan')):>{max(8, len(c) + 2)}.2f}" for c in names)
        )
    return "\n".join(lines)


def check_results(cfg, results) -> None:
    """Raise :class:`RunFailed` unless the final evaluation produced finite AP values."""
    if "evaluator" not in cfg.dataloader:
        return
    test = cfg.dataloader.test.dataset.get("names", "the test set")
    metrics_json = os.path.join(cfg.train.output_dir, "metrics.json")
    if not results:
        raise RunFailed(
            f"The evaluation on {test} received no predictions (the evaluator's warning above "
            "says so): the model detected nothing. A diverged model does this; see the losses "
            f"in {metrics_json}."
        )
    bad = sorted(
        task
        for task, metrics in results.items()
        if isinstance(metrics, dict) and not math.isfinite(metrics.get("AP", 0.0))
    )
    if bad:
        raise RunFailed(
            f"The evaluation on {test} gave AP = nan for {bad}: the predictions are not "
            "usable (non-finite boxes or scores, or no detection matching any class). A diverged "
            f"model does this; see the losses in {metrics_json}."
        )


def print_summary(cfg, results, trained: bool, picture: str | None = None) -> None:
    """The closing lines of ``tools/train_net.py``: the AP table and where the run's files are."""
    out = os.path.abspath(cfg.train.output_dir)
    print("\n==== efl_d2 summary ====")
    if results:
        print(format_lvis_ap(results))
    else:
        print("(no evaluation results)")
    if trained:
        print(f"checkpoint: {os.path.join(out, 'model_final.pth')}")
        print(f"metrics:    {os.path.join(out, 'metrics.json')} (TensorBoard events in {out})")
    print(f"config:     {os.path.join(out, 'config.yaml')}")
    if picture:
        print(f"picture:    {os.path.abspath(picture)} (predictions on val images | ground truth)")
