"""One study run: a ``tools/train_net.py`` subprocess per (variant, seed), its progress, and its
numbers read back from the files it wrote (``metrics.json``, the evaluator's per-category report,
``model_final.pth``) into ``study_result.json``."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time

from study_plan import METRICS, VARIANTS, Plan, schedule_overrides

from efl_d2 import categories
from efl_d2._atomic import atomic_write_text
from efl_d2.evaluation import read_per_category_report

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIGS = os.path.join(HERE, "configs")
RESULT_FILE = "study_result.json"  # a run's final results file: its presence means "finished"
# the per-category report LVISEvaluator writes in its output folder (standard protocol)
PER_CATEGORY_REPORT = os.path.join("inference", "per_category_ap_bbox.json")
_SAY_LOCK = threading.Lock()


def say(line: str) -> None:
    """Print one progress line at once: runs report from parallel threads, and print() writes
    the text and its newline separately, so two lines could interleave."""
    with _SAY_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


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


class MetricsTail:
    """The rows a training process appends to its ``metrics.json``, as they come: whole lines
    only, since the process may be writing one."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0

    def new_rows(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        rows = []
        for line in data[:end].splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return rows


def follow_progress(
    metrics_json: str, who: str, max_iter: int, *, t0: float, stop: threading.Event
) -> None:
    """Say every training row a run appends to its ``metrics.json`` (polled every 2 s until
    ``stop``): progress from the run's file, not from its console text."""
    tail = MetricsTail(metrics_json)
    while not stop.wait(2.0):
        for row in tail.new_rows():
            if "total_loss" not in row:
                continue
            done = row["iteration"] + 1
            eta = datetime.timedelta(seconds=int(row.get("eta_seconds", 0)))
            say(
                f"          {who} iter {done}/{max_iter}  total_loss {row['total_loss']:.4g}  "
                f"eta {eta}  ({time.time() - t0:.0f} s)"
            )
            if done == max_iter:  # the evaluation follows the last training row
                say(f"          {who} evaluating ({time.time() - t0:.0f} s)")


def read_metrics(path: str) -> list[dict]:
    """The rows of a finished run's ``metrics.json`` (none if it has none)."""
    return MetricsTail(path).new_rows()


def read_run_category_ap(run_out: str, ds: dict, box_ap: float) -> dict[str, float]:
    """AP per category id (as text) in percent, NaN where undefined, from the per-category report
    the evaluator wrote. It writes none when there are no detections (box AP NaN): all NaN then."""
    path = os.path.join(run_out, PER_CATEGORY_REPORT)
    if not os.path.isfile(path):
        if math.isnan(box_ap):
            return {str(c["id"]): float("nan") for c in ds["categories"]}
        raise RuntimeError(
            f"{path} is missing: the study needs efl_d2's LVISEvaluator with an output_dir"
        )
    return {str(r["category_id"]): r["ap"] * 100 for r in read_per_category_report(path)}


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
        stop = threading.Event()
        follower = threading.Thread(
            target=follow_progress,
            args=(os.path.join(out, "metrics.json"), f"{variant} seed {seed}", plan.max_iter),
            kwargs={"t0": t0, "stop": stop},
            daemon=True,
        )
        follower.start()
        try:
            log.writelines(proc.stdout)
            rc = proc.wait()
        finally:
            stop.set()
            follower.join()
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
    box_ap = {k: float(last[f"bbox/{k}"]) for k in (*METRICS, "AP50", "AP75")}
    res = {
        "variant": variant,
        "seed": seed,
        "identity": ident,
        "metrics": box_ap,
        "per_category_ap": read_run_category_ap(out, ds, box_ap["AP"]),
        "efl_trace": efl_trace(metrics),
        "loss_buffers": final_loss_buffers(os.path.join(out, "model_final.pth")),
        "train_loss_cls": late_training_loss(metrics, plan.max_iter),
        "wall_s": wall,
        "loadavg_end": load_average(),
        "threads": env.get("OMP_NUM_THREADS", "default"),
        "median_iter_s": sorted(train_times)[len(train_times) // 2] if train_times else None,
    }
    atomic_write_text(done, json.dumps(res))
    m = res["metrics"]
    say(
        f"[study] {tag} {variant} seed {seed}: done in {wall:.0f} s  AP {m['AP']:.2f}  "
        f"APr {m['APr']:.2f}  APc {m['APc']:.2f}  APf {m['APf']:.2f}",
    )
    return res


# --------------------------------------------------------------------------------------------
# all runs


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as text ("?" where the system has none)."""
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
