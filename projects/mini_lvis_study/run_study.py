#!/usr/bin/env python
"""The long-tail study on mini-LVIS: focal vs EFL (and its ablations and s sweep), end to end.

Trains every variant with N seeds through the project's training engine (``tools/train_net.py``,
one subprocess per run), evaluates with ``LVISEvaluator``, and writes a results table (Markdown +
JSON) and plots. Finished runs are not redone: a run is finished when its folder holds
``study_result.json`` (written after training, evaluation and parsing succeeded), so an interrupted
study continues where it stopped when the same command is run again.

Examples (from the repository root):

    .venv/bin/python projects/mini_lvis_study/run_study.py --mode quick   # all variants, 1 seed
    .venv/bin/python projects/mini_lvis_study/run_study.py --mode full    # focal vs EFL, 6 seeds

Each run is a ``tools/train_net.py`` subprocess with 1 torch thread (``--threads``), two of them
side by side (``--jobs``). A run's result is bit-identical for a fixed thread count (same machine
kind and torch build), so rerunning a mode reproduces its committed table exactly.

Modes (``--seeds``, ``--variants``, ``--max-iter``, ``--image-size`` override them):

- ``quick``: every variant (focal, EFL s=8, WF only, FF only, EQLv2&Focal, s in {0,2,4,8,12}),
  1 seed, a short schedule at a small input size.
- ``full``: focal vs EFL (s = 8), 6 seeds each, a longer schedule at the configs' input size
  (6, because the paired sign-flip test cannot give p < 0.25 with 3).

``efl_s0`` is not trained: with s = 0 EFL is exactly the focal loss (as in the paper's Table 4,
whose s = 0 row is the baseline), so it reports the ``focal`` runs; ``efl_s8`` is ``efl``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from efl_d2.evaluation import categories
from efl_d2.losses import efl_focusing_factor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIGS = os.path.join(HERE, "configs")
RESULT_FILE = "study_result.json"  # a run's final results file: its presence means "finished"
METRICS = ("AP", "APr", "APc", "APf")
GROUPS = categories.FREQUENCY_GROUPS
_SAY_LOCK = threading.Lock()


def say(line: str) -> None:
    """Print one progress line at once: runs report from parallel threads, and print() writes
    the text and its newline separately, so two lines could interleave."""
    with _SAY_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    config: str  # file under configs/
    overrides: tuple[str, ...] = ()
    same_as: str | None = None  # reported from another variant's runs instead of being trained
    scale: float | None = None  # EFL's s, for the sweep


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("focal", "Baseline† (focal loss)", "focal.py", scale=0.0),
        Variant("efl", "EFL (s=8)", "efl.py", scale=8.0),
        Variant("efl_wf", "EFL, weighting factor only", "efl_wf.py"),
        Variant("efl_ff", "EFL, focusing factor only", "efl_ff.py"),
        Variant("eqlv2", "EQLv2&Focal", "eqlv2.py"),
        Variant("efl_s0", "EFL s=0 (= focal)", "focal.py", same_as="focal", scale=0.0),
        Variant("efl_s2", "EFL s=2", "efl.py", ("model.cls_loss.scale=2.0",), scale=2.0),
        Variant("efl_s4", "EFL s=4", "efl.py", ("model.cls_loss.scale=4.0",), scale=4.0),
        Variant("efl_s8", "EFL s=8 (= efl)", "efl.py", same_as="efl", scale=8.0),
        Variant("efl_s12", "EFL s=12", "efl.py", ("model.cls_loss.scale=12.0",), scale=12.0),
    ]
}
SWEEP = ("efl_s0", "efl_s2", "efl_s4", "efl_s8", "efl_s12")


@dataclass(frozen=True)
class Mode:
    variants: tuple[str, ...]
    seeds: int
    max_iter: int
    image_size: int  # test short edge; training samples {size - 32, size, size + 32}


MODES = {
    "quick": Mode(
        variants=("focal", "efl", "efl_wf", "efl_ff", "eqlv2", *SWEEP),
        seeds=1,
        max_iter=200,
        image_size=192,
    ),
    "full": Mode(variants=("focal", "efl"), seeds=6, max_iter=900, image_size=256),
}


@dataclass
class Plan:
    mode: str
    variants: list[str]  # as requested (aliases included)
    seeds: list[int]
    max_iter: int
    image_size: int
    extra_opts: list[str] = field(default_factory=list)

    def trained_variants(self) -> list[str]:
        out = []
        for v in self.variants:
            base = VARIANTS[v].same_as or v
            if base not in out:
                out.append(base)
        return out


def schedule_overrides(max_iter: int, image_size: int) -> list[str]:
    """The study's schedule length and input size as config overrides.

    The configs' learning-rate schedule is given in fractions of training (fvcore's multi-step
    scheduler is scale-invariant; warm-up is ``warmup_length`` = 1/6 of training, 10x decays at 2/3
    and 0.9), so only ``train.max_iter`` changes.
    """
    s = image_size
    train_sizes = ",".join(map(str, [max(32, s - 32), s, s + 32]))
    return [
        f"train.max_iter={max_iter}",
        "train.checkpointer.period=1000000000",  # only model_final.pth
        f"train.log_period={max(1, min(20, max_iter // 10))}",
        f"dataloader.train.mapper.augmentations.0.short_edge_length=[{train_sizes}]",
        f"dataloader.train.mapper.augmentations.0.max_size={int(s * 1.5)}",
        f"dataloader.test.mapper.augmentations.0.short_edge_length={s}",
        f"dataloader.test.mapper.augmentations.0.max_size={int(s * 1.5)}",
    ]


# --------------------------------------------------------------------------------------------
# dataset


def prepare_dataset(root: str) -> dict:
    """Use the mini-LVIS at ``root`` if one is complete there, else build the default one.

    Returns a summary: params, categories (id, name, frequency, train image_count) by contiguous id.
    """
    import efl_d2  # noqa: F401
    from efl_d2.data import ensure_mini_lvis
    from efl_d2.data import mini_lvis as ml

    if not ml.is_complete(root):
        say(f"[study] building the default mini-LVIS under {root} ...")
        ensure_mini_lvis(root)
    paths = ml.mini_lvis_paths(root)
    meta = ml.load_meta(paths)
    with open(paths.json_train) as f:
        cats = categories.category_records(json.load(f)["categories"])
    return {
        "root": os.path.abspath(root),
        "params": meta.get("params", {}),
        "categories": [
            {
                "id": c["category_id"],
                "name": c["name"],
                "frequency": c["frequency"],
                "image_count": c["image_count"],
            }
            for c in cats
        ],
        "sibling_pairs": [list(p) for p in ml.sibling_pairs(meta)],
    }


def dataset_overrides(ds: dict) -> list[str]:
    n_train = ds["params"].get("num_train_images", 600)
    return [
        f"model.num_classes={len(ds['categories'])}",
        # the configs' rule: LVIS's t = 0.001 of 100k images, i.e. ~100 images
        f"dataloader.train.repeat_thresh={100 / n_train}",
    ]


# --------------------------------------------------------------------------------------------
# one run


def run_dir(out_root: str, variant: str, seed: int) -> str:
    return os.path.join(out_root, variant, f"seed{seed}")


def run_overrides(plan: Plan, ds: dict, variant: str, seed: int, out: str) -> list[str]:
    v = VARIANTS[variant]
    return [
        *schedule_overrides(plan.max_iter, plan.image_size),
        *dataset_overrides(ds),
        *v.overrides,
        f"train.seed={seed}",
        *plan.extra_opts,
        f"train.output_dir={out}",
        f"+dataloader.evaluator.output_dir={os.path.join(out, 'inference')}",
    ]


def _identity(plan: Plan, ds: dict, variant: str, seed: int) -> dict:
    """What makes two runs the same experiment (output dir excluded)."""
    ov = [o for o in run_overrides(plan, ds, variant, seed, "<out>")]
    return {"config": VARIANTS[variant].config, "overrides": ov, "dataset": ds["params"]}


def read_metrics(path: str) -> list[dict]:
    rows = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return rows


def per_category_ap(results_json: str, gt_json: str) -> dict[int, float]:
    """AP per category id in percent (NaN where undefined) of the dumped results, scored as the
    evaluator scores them (:mod:`efl_d2.evaluation`, lvis-api's numbers)."""
    from efl_d2.data.datasets import read_json
    from efl_d2.evaluation import lvis_arrays, score_lvis
    from efl_d2.evaluation.lvis_scoring import read_lvis_results

    gt = read_json(gt_json)
    dets = read_lvis_results(results_json)
    if len(dets["score"]) == 0:
        return {c["id"]: float("nan") for c in gt["categories"]}
    scores = score_lvis(lvis_arrays(gt, dets, max_dets_per_image=300))
    rows = categories.per_category_ap(scores.precision, scores.cat_ids.tolist(), gt["categories"])
    return {r["category_id"]: r["ap"] * 100 for r in rows}


def efl_trace(metrics: list[dict]) -> dict:
    """``efl/<stat>_<group>`` scalars over iterations (logged in training for EFL-like losses)."""
    keys = sorted({k for m in metrics for k in m if k.startswith("efl/")})
    trace = {"iteration": []}
    for k in keys:
        trace[k] = []
    for m in metrics:
        if any(k in m for k in keys):
            trace["iteration"].append(m["iteration"])
            for k in keys:
                trace[k].append(m.get(k, float("nan")))
    return trace if keys else {}


def late_training_loss(metrics: list[dict], max_iter: int) -> float | None:
    """Mean logged ``loss_cls`` over the last third of training (the rows logged after the first
    lr decay at 2/3; Detectron2 logs each value as the median of its last 20 iterations). Two runs
    with the same seed train on the same batches, so their difference compares how well each fits
    them."""
    values = [
        m["loss_cls"]
        for m in metrics
        if "loss_cls" in m and m["iteration"] + 1 > 2 * max_iter / 3  # iterations done
    ]
    return sum(values) / len(values) if values else None


def final_loss_buffers(ckpt: str) -> dict:
    """The gradient statistics of the classification loss in ``model_final.pth``, if it keeps
    them (EFL family, EQLv2&Focal): ``pos_neg`` (the g_j the loss uses) and ``grad_ratio``, the
    unclamped pos_grad / (neg_grad + 1e-10) per category."""
    from efl_d2.checkpoint import read_loss_statistics
    from efl_d2.losses.grad_stats import gradient_ratio

    if not os.path.isfile(ckpt):
        return {}
    stats = read_loss_statistics(ckpt)
    out = next((s for name, s in stats.items() if name.endswith("cls_loss")), {})
    out = {k: t.flatten() for k, t in out.items()}
    if "pos_grad" in out and "neg_grad" in out:
        out["grad_ratio"] = gradient_ratio(out["pos_grad"], out["neg_grad"])
    return {k: [float(x) for x in t] for k, t in out.items() if k in ("pos_neg", "grad_ratio")}


def train_one(
    plan: Plan, ds: dict, variant: str, seed: int, out_root: str, env: dict, tag: str
) -> dict:
    out = run_dir(out_root, variant, seed)
    ident = _identity(plan, ds, variant, seed)
    done = os.path.join(out, RESULT_FILE)
    if os.path.isfile(done):
        with open(done) as f:
            res = json.load(f)
        if res.get("identity") != ident:
            raise SystemExit(
                f"{done} was made with other settings than this study's (config, overrides or "
                "dataset). Use another --output-dir, or delete that run to redo it."
            )
        # Re-read (cheap): runs finished by an older version of this script gain new fields.
        res["loss_buffers"] = final_loss_buffers(os.path.join(out, "model_final.pth"))
        res["train_loss_cls"] = late_training_loss(
            read_metrics(os.path.join(out, "metrics.json")), plan.max_iter
        )
        say(
            f"[study] {tag} {variant} seed {seed}: finished before, skipped "
            f"(AP {res['metrics']['AP']:.2f}, APr {res['metrics']['APr']:.2f})",
        )
        return res

    if os.path.isdir(out):  # an unfinished run: start it over (metrics.json would be appended to)
        shutil.rmtree(out)
    os.makedirs(out)
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "train_net.py"),
        "--config-file",
        os.path.join(CONFIGS, VARIANTS[variant].config),
        *run_overrides(plan, ds, variant, seed, out),
    ]
    say(
        f"[study] {tag} {variant} seed {seed}: training {plan.max_iter} iterations -> {out}",
    )
    t0 = time.time()
    with open(os.path.join(out, "study_run.log"), "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if " iter: " in line:
                p = line.split(" iter: ", 1)[1].split()
                eta = line.split("eta: ", 1)[1].split()[0] if "eta: " in line else "?"
                loss = line.split("total_loss: ", 1)[1].split()[0] if "total_loss:" in line else "?"
                say(
                    f"          {variant} seed {seed} iter {int(p[0]) + 1}/{plan.max_iter}  "
                    f"total_loss {loss}  "
                    f"eta {eta}  ({time.time() - t0:.0f} s)",
                )
            elif "Start inference" in line:
                say(
                    f"          {variant} seed {seed} evaluating ({time.time() - t0:.0f} s)",
                )
        rc = proc.wait()
    wall = time.time() - t0
    if rc != 0:
        with open(os.path.join(out, "study_run.log")) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{variant} seed {seed} failed (exit {rc}); log tail:\n{tail}")

    metrics = read_metrics(os.path.join(out, "metrics.json"))
    evals = [m for m in metrics if "bbox/AP" in m]
    if not evals:
        raise RuntimeError(f"{variant} seed {seed}: no bbox/AP in {out}/metrics.json")
    last = evals[-1]
    train_times = [m["time"] for m in metrics if "time" in m]
    res = {
        "variant": variant,
        "seed": seed,
        "identity": ident,
        "metrics": {k: float(last[f"bbox/{k}"]) for k in (*METRICS, "AP50", "AP75")},
        "per_category_ap": {
            str(k): v
            for k, v in per_category_ap(
                os.path.join(out, "inference", "lvis_instances_results.json"),
                os.path.join(ds["root"], "lvis", "mini_lvis_v1_val.json"),
            ).items()
        },
        "efl_trace": efl_trace(metrics),
        "loss_buffers": final_loss_buffers(os.path.join(out, "model_final.pth")),
        "train_loss_cls": late_training_loss(metrics, plan.max_iter),
        "wall_s": wall,
        "loadavg_end": _loadavg(),
        "threads": env.get("OMP_NUM_THREADS", "default"),
        "median_iter_s": sorted(train_times)[len(train_times) // 2] if train_times else None,
    }
    with open(done + ".tmp", "w") as f:
        json.dump(res, f)
    os.replace(done + ".tmp", done)
    m = res["metrics"]
    say(
        f"[study] {tag} {variant} seed {seed}: done in {wall:.0f} s  AP {m['AP']:.2f}  "
        f"APr {m['APr']:.2f}  APc {m['APc']:.2f}  APf {m['APf']:.2f}",
    )
    return res


# --------------------------------------------------------------------------------------------
# aggregation, tables, plots


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
    for grp in GROUPS:
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


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _same_table(previous: dict | None, summary: dict) -> bool:
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
                for g in GROUPS
            ]
            below = "/".join(str(st[g]["ratio_below_1"]) if g in st else "-" for g in GROUPS)
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
            for g in GROUPS if n in main else ("r",):
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


# --------------------------------------------------------------------------------------------


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run_all(plan, ds, todo, out_root, env, jobs, t0) -> dict[tuple[str, int], dict]:
    """Train (or reuse) every (variant, seed) of ``todo``, ``jobs`` at a time.

    Runs are independent subprocesses with a pinned thread count, so their results do not depend
    on ``jobs``. If a run fails, no new run starts, the ones in flight finish (and are kept), and
    the first error is raised.
    """
    results: dict[tuple[str, int], dict] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(train_one, plan, ds, v, s, out_root, env, f"[{i + 1}/{len(todo)}]"): (v, s)
            for i, (v, s) in enumerate(todo)
        }
        try:
            for fut in concurrent.futures.as_completed(futures):
                results[futures[fut]] = fut.result()
                say(
                    f"[study] {len(results)}/{len(todo)} run(s) done, elapsed "
                    f"{(time.time() - t0) / 60:.1f} min",
                )
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--mode", choices=sorted(MODES), default="quick")
    p.add_argument("--variants", help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1); default by mode")
    p.add_argument("--max-iter", type=int, help="training iterations per run; default by mode")
    p.add_argument("--image-size", type=int, help="test short edge in px; default by mode")
    p.add_argument(
        "--datasets-root",
        default=os.path.join(REPO, "datasets"),
        help="mini-LVIS root (the default build is made there if none is complete)",
    )
    p.add_argument("--output-dir", help="run folders (default output/mini_lvis_study/<mode>)")
    p.add_argument(
        "--results-dir", help="tables and plots (default projects/mini_lvis_study/results/<mode>)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch (OMP/MKL) threads per training process (default 1). A run is "
        "bit-reproducible for a fixed thread count, not across thread counts, and the "
        "committed tables were made with 1",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="runs trained side by side (default: 2, or 1 on a 1-core machine). Keep "
        "jobs x threads <= cores: oversubscribed OpenMP threads slow training by an order "
        "of magnitude",
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="extra config overrides for every run (key=value ...)",
    )
    return p.parse_args(argv)


def make_plan(args) -> Plan:
    mode = MODES[args.mode]
    variants = args.variants.split(",") if args.variants else list(mode.variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    opts = [o for o in args.opts if o != "--"]
    return Plan(
        mode=args.mode,
        variants=variants,
        seeds=list(range(args.seeds if args.seeds is not None else mode.seeds)),
        max_iter=args.max_iter or mode.max_iter,
        image_size=args.image_size or mode.image_size,
        extra_opts=opts,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    out_root = os.path.abspath(
        args.output_dir or os.path.join(REPO, "output", "mini_lvis_study", args.mode)
    )
    res_dir = os.path.abspath(args.results_dir or os.path.join(HERE, "results", args.mode))
    os.makedirs(out_root, exist_ok=True)
    os.makedirs(res_dir, exist_ok=True)
    t0 = time.time()
    load0 = _loadavg()

    ds = prepare_dataset(args.datasets_root)
    env = dict(os.environ)
    env.update(DETECTRON2_DATASETS=ds["root"], PYTHONWARNINGS="ignore")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    if args.threads < 1 or args.jobs < 1:
        raise SystemExit("--threads and --jobs must be >= 1")
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))

    trained = plan.trained_variants()
    todo = [(v, s) for v in trained for s in plan.seeds]
    say(
        f"[study] mode {plan.mode}: {len(trained)} trained variant(s) x {len(plan.seeds)} "
        f"seed(s) = {len(todo)} run(s), {plan.max_iter} iterations at {plan.image_size} px; "
        f"runs in {out_root}",
    )
    n_skipped = sum(
        os.path.isfile(os.path.join(run_dir(out_root, v, s), RESULT_FILE)) for v, s in todo
    )
    results = run_all(plan, ds, todo, out_root, env, args.jobs, t0)
    runs: dict[str, list[dict]] = {v: [results[(v, s)] for s in plan.seeds] for v in trained}

    import torch

    conditions = {
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "jobs": args.jobs,
        "run_threads": sorted({str(r.get("threads", "?")) for rs in runs.values() for r in rs}),
        "loadavg_start": load0,
        "loadavg_end": _loadavg(),
        "wall_s": time.time() - t0,
        "runs_wall_s": sum(r["wall_s"] for rs in runs.values() for r in rs),
        "runs_trained": len(todo) - n_skipped,
        "runs_skipped": n_skipped,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    summary = aggregate(plan, ds, runs, conditions)
    previous = _read_json(os.path.join(res_dir, "results.json"))
    if conditions["runs_trained"] == 0 and _same_table(previous, summary):
        # Only re-aggregated: keep the record of the invocation that trained these runs.
        summary["conditions"] = previous["conditions"]
    with open(os.path.join(res_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, allow_nan=True)
    md = markdown(summary)
    with open(os.path.join(res_dir, "results.md"), "w") as f:
        f.write(md)
    files = [] if args.no_plots else plots(summary, runs, res_dir)
    print("\n" + md)
    say(
        f"[study] wrote {res_dir}/results.md, results.json"
        + (", " + ", ".join(os.path.basename(f) for f in files) if files else ""),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
