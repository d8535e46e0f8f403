"""The study's report from its runs: aggregation over seeds, the paired comparison with the focal
baseline, the Markdown table and the plots."""

from __future__ import annotations

import json
import math
import os
import statistics

from study_plan import METRICS, SWEEP, VARIANTS, Plan

from efl_d2 import categories
from efl_d2.losses import efl_focusing_factor


def _mean_std(xs: list[float]) -> tuple[float, float | None]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))  # sample std


def loss_statistics(buffers: dict, cats: list[dict]) -> dict:
    """Per frequency group, median / min / max of the final unclamped gradient ratio, and the
    number of categories whose ratio ended below 1 (where EFL's g_j < 1: it still acts)."""
    ratio = buffers["grad_ratio"]
    out = {}
    for grp in categories.FREQUENCY_GROUPS:
        idx = [i for i, c in enumerate(cats) if c["frequency"] == grp]
        values = [ratio[i] for i in idx]
        if not values:
            continue
        out[grp] = {
            "ratio_median": statistics.median(values),
            "ratio_min": min(values),
            "ratio_max": max(values),
            "ratio_below_1": sum(1 for i in idx if ratio[i] < 1),
        }
    return out


def read_summary(path: str) -> dict | None:
    """An earlier ``results.json``; None if there is none (or it cannot be read)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def same_table(previous: dict | None, summary: dict) -> bool:
    """Whether ``previous`` (an older results.json) aggregated the same runs as ``summary``."""
    keys = ("mode", "seeds", "max_iter", "image_size", "extra_opts")
    return (
        previous is not None
        and "conditions" in previous
        and all(previous.get(k) == summary[k] for k in keys)
        and list(previous.get("variants", {})) == list(summary["variants"])
        and all(
            previous["variants"][v].get("per_seed") == e["per_seed"]
            for v, e in summary["variants"].items()
        )
    )


def sign_flip_p(diffs: list[float]) -> float:
    """Exact two-sided p-value of the paired sign-flip test: the share of the 2^n ways to flip
    the signs of the n differences whose |mean| is at least the observed one. It assumes nothing
    about their distribution, and with n seeds it cannot go below 2 / 2^n."""
    if not 1 <= len(diffs) <= 20:
        raise ValueError(f"sign_flip_p takes 1-20 differences, got {len(diffs)}")
    observed = abs(sum(diffs))
    tol = 1e-9 * max(1.0, observed)  # a flip that reproduces the sum exactly must count
    n = len(diffs)
    hits = sum(
        abs(sum(d if mask >> i & 1 else -d for i, d in enumerate(diffs))) >= observed - tol
        for mask in range(2**n)
    )
    return hits / 2**n


PAIRED_KEYS = (*METRICS, "train_loss_cls")


def paired_comparison(runs: dict[str, list[dict]], baseline: str = "focal") -> dict:
    """Every trained variant minus ``baseline``, paired by seed. A seed fixes the initial weights
    and every batch (the loader is indexed by seed and iteration), so a paired difference is the
    loss's effect plus the noise of the training trajectory, without the noise of init and data."""
    if baseline not in runs:
        return {}
    base = {r["seed"]: r for r in runs[baseline]}
    out = {}
    for variant, rs in runs.items():
        pairs = [(r, base[r["seed"]]) for r in rs if r["seed"] in base]
        if variant == baseline or not pairs:
            continue
        entry = {"baseline": baseline, "seeds": [r["seed"] for r, _ in pairs]}
        for k in PAIRED_KEYS:
            values = [(_run_value(r, k), _run_value(b, k)) for r, b in pairs]
            if any(x is None or y is None or math.isnan(x) or math.isnan(y) for x, y in values):
                continue
            diffs = [x - y for x, y in values]
            mean, std = _mean_std(diffs)
            entry[k] = {
                "diffs": diffs,
                "mean": mean,
                "std": std,
                "below": sum(d < 0 for d in diffs),
                # exact test up to 20 seeds (2^20 flips); beyond, none rather than a crash
                "p_sign_flip": sign_flip_p(diffs) if len(diffs) <= 20 else None,
            }
        out[variant] = entry
    return out


def _run_value(run: dict, key: str) -> float | None:
    return run["metrics"][key] if key in METRICS else run.get(key)


def aggregate(plan: Plan, ds: dict, runs: dict[str, list[dict]], conditions: dict) -> dict:
    cats = ds["categories"]
    table = {}
    for v in plan.variants:
        src = VARIANTS[v].same_as or v
        rs = runs[src]
        entry = {
            "label": VARIANTS[v].label,
            "same_as": VARIANTS[v].same_as,
            "scale": VARIANTS[v].scale,
            "seeds": [r["seed"] for r in rs],
            "per_seed": {},
        }
        for r in rs:
            entry["per_seed"][str(r["seed"])] = r["metrics"]
        for k in (*METRICS, "AP50", "AP75"):
            mean, std = _mean_std([r["metrics"][k] for r in rs])
            entry[k] = {"mean": mean, "std": std}
        per_cat = {}
        for c in cats:
            mean, std = _mean_std(
                [r["per_category_ap"].get(str(c["id"]), float("nan")) for r in rs]
            )
            per_cat[str(c["id"])] = {"mean": mean, "std": std}
        entry["per_category_ap"] = per_cat
        entry["loss_statistics"] = {
            str(r["seed"]): loss_statistics(r["loss_buffers"], cats)
            for r in rs
            if r["loss_buffers"].get("grad_ratio")
        }
        entry["train_loss_cls"] = {str(r["seed"]): r.get("train_loss_cls") for r in rs}
        entry["wall_s"] = [r["wall_s"] for r in rs]
        entry["median_iter_s"] = [r.get("median_iter_s") for r in rs]
        entry["threads"] = [r.get("threads") for r in rs]
        table[v] = entry
    return {
        "mode": plan.mode,
        "seeds": plan.seeds,
        "max_iter": plan.max_iter,
        "image_size": plan.image_size,
        "extra_opts": plan.extra_opts,
        "dataset": {k: ds[k] for k in ("params", "categories")},
        "conditions": conditions,
        "variants": table,
        "paired": paired_comparison(runs),
    }


def _fmt(ms: dict) -> str:
    if ms["mean"] is None or math.isnan(ms["mean"]):
        return "n/a"
    return f"{ms['mean']:.2f}" + (f" ± {ms['std']:.2f}" if ms["std"] is not None else "")


def _fmt_paired(d: dict, spec: str) -> str:
    spread = f" ± {d['std']:{spec}}" if d["std"] is not None else ""
    p = "n/a" if d["p_sign_flip"] is None else f"{d['p_sign_flip']:.3g}"
    return f"{d['mean']:+{spec}}{spread}; {d['below']}/{len(d['diffs'])} below, p {p}"


def markdown(summary: dict) -> str:
    lines = [
        f"# mini-LVIS study, mode `{summary['mode']}`",
        "",
        (
            f"Box AP on mini_lvis_v1_val (LVISEvaluator), mean ± sample std over seeds "
            f"{summary['seeds']}; {summary['max_iter']} iterations at short edge "
            f"{summary['image_size']} px."
        ),
        "",
        "| variant | seeds | AP | APr | APc | APf | AP50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in summary["variants"].items():
        if name in SWEEP and e["same_as"]:
            continue  # listed in the sweep table
        lines.append(
            f"| {e['label']} (`{name}`) | {len(e['seeds'])} | "
            + " | ".join(_fmt(e[k]) for k in (*METRICS, "AP50"))
            + " |"
        )
    sweep = [v for v in SWEEP if v in summary["variants"]]
    if sweep:
        lines += [
            "",
            "s sweep (gamma_b = 2; s = 0 is the focal loss, s = 8 the EFL row):",
            "",
            "| s | AP | APr | APc | APf |",
            "|---|---|---|---|---|",
        ]
        for v in sweep:
            e = summary["variants"][v]
            lines.append(f"| {e['scale']:g} | " + " | ".join(_fmt(e[k]) for k in METRICS) + " |")
    paired = summary.get("paired", {})
    if paired:
        lines += [
            "",
            (
                "Paired by seed, variant − Baseline† (a seed fixes the initial weights and every "
                "batch): mean ± sample std of the per-seed differences, how many seeds are below, "
                "and the exact two-sided sign-flip p-value (with n seeds never below 2/2^n). The "
                "last column compares the training loss_cls averaged over the last third of "
                "training (same batches for both):"
            ),
            "",
            "| variant − focal | seeds | AP | APr | APc | APf | train loss_cls |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, e in paired.items():
            cells = [
                _fmt_paired(e[k], ".3f" if k == "train_loss_cls" else ".2f") if k in e else "n/a"
                for k in PAIRED_KEYS
            ]
            lines.append(f"| `{name}` | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    stats = [
        (name, seed, st)
        for name, e in summary["variants"].items()
        if not e["same_as"]
        for seed, st in e.get("loss_statistics", {}).items()
    ]
    if stats:
        lines += [
            "",
            (
                "The loss's gradient statistics at the end of training: per frequency group the "
                "median (min–max) of pos_grad / neg_grad per category; EFL uses "
                "g_j = min(1, ratio) and equals the focal loss where g_j = 1 (ratio < 1: the "
                "categories where it does not):"
            ),
            "",
            "| variant | seed | rare | common | frequent | ratio < 1 (r/c/f) |",
            "|---|---|---|---|---|---|",
        ]
        for name, seed, st in stats:
            cells = [
                f"{st[g]['ratio_median']:.3g} ({st[g]['ratio_min']:.3g}–{st[g]['ratio_max']:.3g})"
                if g in st
                else "n/a"
                for g in categories.FREQUENCY_GROUPS
            ]
            below = "/".join(
                str(st[g]["ratio_below_1"]) if g in st else "-" for g in categories.FREQUENCY_GROUPS
            )
            lines.append(f"| `{name}` | {seed} | " + " | ".join(cells) + f" | {below} |")
    c = summary["conditions"]
    lines += [
        "",
        (
            f"Conditions: {c.get('cpu_count')} CPU cores; the runs' own wall times (training "
            f"+ evaluation, as each run measured them) add up to "
            f"{c.get('runs_wall_s', 0) / 60:.1f} min, trained with "
            f"{'/'.join(c.get('run_threads', ['?']))} torch thread(s) per run. This invocation: "
            f"{c.get('jobs', 1)} run(s) side by side, load average at start "
            f"{c.get('loadavg_start')} / end {c.get('loadavg_end')}, "
            f"{c.get('wall_s', 0) / 60:.1f} min for "
            f"{c.get('runs_trained')} trained run(s) ({c.get('runs_skipped')} reused)."
        ),
    ]
    return "\n".join(lines) + "\n"


def plots(summary: dict, runs: dict[str, list[dict]], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = []
    variants = summary["variants"]
    names = [n for n, e in variants.items() if not e["same_as"]]

    # 1. AP per frequency group per variant
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 3.6))
    width = 0.8 / 4
    x = np.arange(len(names))
    for i, k in enumerate(METRICS):
        means = [variants[n][k]["mean"] for n in names]
        stds = [variants[n][k]["std"] or 0.0 for n in names]
        ax.bar(x + (i - 1.5) * width, means, width, yerr=stds, capsize=2, label=k)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel("box AP")
    ax.set_title(f"mini-LVIS val, mode {summary['mode']} (mean ± std over seeds)")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    files.append(os.path.join(out_dir, "ap_by_group.png"))
    fig.savefig(files[-1], dpi=90)
    plt.close(fig)

    # 2. per-category AP against training frequency
    cats = summary["dataset"]["categories"]
    counts = np.array([c["image_count"] for c in cats])
    fig, ax = plt.subplots(figsize=(7, 4))
    show = [n for n in names if n in ("focal", "efl")] or names[:2]
    show += [n for n in names if n not in show]
    for j, n in enumerate(show):
        aps = np.array([variants[n]["per_category_ap"][str(c["id"])]["mean"] for c in cats])
        main = n in ("focal", "efl")
        ax.scatter(
            counts * (1 + 0.03 * (j - len(show) / 2)),
            aps,
            s=22 if main else 10,
            alpha=0.9 if main else 0.4,
            label=n,
            marker="o" if main else ".",
        )
    for lim, name in (
        (categories.RARE_MAX_IMAGES, f"rare ≤ {categories.RARE_MAX_IMAGES}"),
        (categories.COMMON_MAX_IMAGES, f"common ≤ {categories.COMMON_MAX_IMAGES}"),
    ):
        ax.axvline(lim + 0.5, color="grey", lw=0.8, ls="--")
        ax.text(lim + 0.5, ax.get_ylim()[1] * 0.97, " " + name, fontsize=7, va="top")
    ax.set_xscale("log")
    ax.set_xlabel("training images of the category")
    ax.set_ylabel("val box AP")
    ax.set_title("per-category AP vs training frequency (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    files.append(os.path.join(out_dir, "ap_per_category.png"))
    fig.savefig(files[-1], dpi=90)
    plt.close(fig)

    # 3. EFL's gamma_j over training (the efl/gamma_{r,c,f} scalars of metrics.json: mean gamma_j of
    #    each frequency group, as the loss will use it) and the final gamma_b + s (1 - g_j) per
    #    category from the loss buffer pos_neg (g_j) in model_final.pth.
    efl_family = [n for n in names if n.startswith("efl")]
    traced = [n for n in efl_family if any("efl/gamma_r" in r["efl_trace"] for r in runs[n])]
    if traced:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        styles = ["-", "--", ":", "-.", (0, (3, 1, 1, 1)), (0, (5, 2))]
        main = ["efl"] if "efl" in traced else traced[:1]
        for i, n in enumerate(
            main + [t for t in traced if t not in main and VARIANTS[t].scale is not None]
        ):
            tr = [r["efl_trace"] for r in runs[n] if "efl/gamma_r" in r["efl_trace"]]
            length = min(len(t["iteration"]) for t in tr)
            it = np.array(tr[0]["iteration"][:length]) + 1
            for g in categories.FREQUENCY_GROUPS if n in main else ("r",):
                ys = np.array([t[f"efl/gamma_{g}"][:length] for t in tr])
                axes[0].plot(
                    it,
                    ys.mean(0),
                    ls=styles[i % len(styles)],
                    color=categories.FREQUENCY_COLORS[g],
                    label=f"{n}: {categories.FREQUENCY_NAMES[g]}",
                )
        axes[0].set_xlabel("iteration")
        axes[0].set_ylabel("mean gamma_j of the group")
        axes[0].set_title("gamma_j during training (efl/gamma_*; sweep: rare only)", fontsize=9)
        axes[0].legend(fontsize=6, ncol=2)
        for n in efl_family:
            bufs = [r["loss_buffers"]["pos_neg"] for r in runs[n] if r["loss_buffers"]]
            if not bufs:
                continue
            s = VARIANTS[n].scale if VARIANTS[n].scale is not None else 8.0
            gamma = efl_focusing_factor(np.mean(np.array(bufs), axis=0), gamma_b=2.0, scale=s)
            axes[1].scatter(counts, gamma, s=14, alpha=0.7, label=f"{n} (s={s:g})")
        axes[1].set_xscale("log")
        axes[1].set_xlabel("training images of the category")
        axes[1].set_ylabel("final gamma_b + s (1 - g_j)")
        axes[1].set_title("final gamma_j per category (pos_neg in model_final.pth)", fontsize=9)
        axes[1].legend(fontsize=6)
        fig.tight_layout()
        files.append(os.path.join(out_dir, "efl_gamma.png"))
        fig.savefig(files[-1], dpi=90)
        plt.close(fig)
    return files
