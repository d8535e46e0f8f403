#!/usr/bin/env python
"""Benchmark exact LVIS bbox evaluation: detectron2's LVIS-API scoring vs efl_d2.evaluation.

The tool writes a seeded, LVIS v1 val-sized synthetic ground truth and detection results (JSON
only, no images), then runs each method in a fresh Python subprocess, so that every peak memory
figure belongs to that method alone, and prints one Markdown table.

Methods (each subprocess loads the results JSON with ``json.load`` into the list of dicts
detectron2's ``LVISEvaluator`` holds: image_id, category_id, bbox [x, y, w, h], score; the timed
step then starts from the ground-truth JSON's path):

* ``baseline``: detectron2's own scoring step,
  ``_evaluate_predictions_on_lvis(lvis.LVIS(gt_json), results, "bbox", max_dets_per_image=300)``
  (lvis-api 0.5.3, with ``efl_d2.data.patch_lvis_for_numpy2()`` applied);
* ``ours``: ``efl_d2.evaluation.evaluate_lvis(gt_json, results, num_workers=N)`` for N = 0
  (in-process) and each value of ``--workers``.

Synthetic data (:mod:`efl_d2.evaluation.synthetic_lvis`; ``--scale 1``: 19,809 images, 244,707
annotations, 300 detections per image = 5,942,700 detections):

* the 1203 LVIS v1 categories with their real ``frequency`` (detectron2's ``LVIS_CATEGORIES``) and
  train ``image_count`` (detectron2's ``LVIS_CATEGORY_IMAGE_COUNT``);
* rule: a category's val image count is ``ceil(train image_count / 5)`` (LVIS v1 val has about
  1/5 of the train images: 19,809 vs 100,170), 72,702 (image, category) pairs in all; each pair
  holds one instance plus a share of the remaining 172,005 instances (multinomial with
  gamma-distributed weights, so some pairs are crowded), which gives 244,707 annotations exactly.
  Images prefer busy images (log-normal weights), so category counts per image vary;
* images: LVIS/COCO-like sizes (long side 640 or 500), sparse non-contiguous ids; per image a few
  ``neg_category_ids`` (Poisson, mean 3, never a category with GT there, frequent ones likelier)
  and ``not_exhaustive_category_ids`` (each positive category with probability 0.1);
* annotations: boxes with log-uniform sides from 4 px to 90% of the short image side (small,
  medium and large all common), an 8-point polygon with cut corners, ``area`` the polygon's area;
* detections per image (``--dets-per-image``, default 300), sorted by score like a detector's
  output: 1 + Poisson(1) jittered copies of each GT box with the right class, Poisson(0.7) with a
  wrong class (half of them a negative category of the image), the rest random boxes (40% with a
  category that is positive or negative in the image); scores from per-kind beta distributions,
  rounded to 6 decimals, 10% of them to 2 decimals (many exact ties).

``--scale s`` uses the first round(19,809 * s) images of the full-scale data set with their
annotations and detections (each image is seeded by its index, so smaller scales are exact
prefixes). Generated files go to ``--work-dir`` (default: a folder in the system temp dir), named
by a hash of the generator parameters, and are reused when present.

Measurements per method, of the timed step only (imports and the JSON load are timed apart):
wall time, CPU time (user + sys of the process and of its reaped children), peak RSS of the main
process (``VmHWM`` of /proc/self/status: ``getrusage(RUSAGE_SELF).ru_maxrss`` survives ``exec``,
so in a subprocess it reports the parent's peak when that is larger; it is only the fallback) and
the max peak RSS over worker processes (``VmHWM`` of every descendant, sampled every 0.1 s with
psutil; forked workers count the pages they share with the main process). Peak RSS includes the
imported libraries (torch, detectron2: about 0.75 GiB) and the loaded results.

    python tools/benchmark_lvis_eval.py --scale 0.02                       # small, all methods
    python tools/benchmark_lvis_eval.py --scale 1 --baseline-scale 0.2 --workers 1 2 4
    python tools/benchmark_lvis_eval.py --scale 0.1 --skip-baseline --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

GENERATOR_VERSION = 1
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
RESULT_TAG = "BENCH_RESULT "
GIB = 2**30


def _log(msg: str) -> None:
    print(f"[benchmark_lvis_eval] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Synthetic LVIS v1 val (efl_d2.evaluation.synthetic_lvis), written once per parameters
# --------------------------------------------------------------------------------------------


def num_images_for_scale(*, scale: float) -> int:
    from efl_d2.evaluation.synthetic_lvis import NUM_VAL_IMAGES

    return max(1, round(NUM_VAL_IMAGES * scale))


def data_paths(*, work_dir: str, seed: int, num_images: int, dets_per_image: int) -> dict:
    """Where the data set of these parameters lives (names carry a hash of the parameters)."""
    params = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "num_images": num_images,
        "dets_per_image": dets_per_image,
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    stem = os.path.join(work_dir, f"synthetic_lvis_v1_val_{num_images}img_{digest}")
    return {
        "params": params,
        "gt": f"{stem}_gt.json",
        "results": f"{stem}_results.json",
        "meta": f"{stem}_meta.json",
    }


def _write_results(*, f, detections: Iterator[list[dict]], num_images: int) -> int:
    """Stream the detection lists as one JSON list; returns the number of detections."""
    f.write("[")
    total = 0
    for index, dets in enumerate(detections):
        if dets:
            f.write(("," if total else "") + json.dumps(dets)[1:-1])
            total += len(dets)
        if (index + 1) % 2000 == 0:
            _log(f"  detections: {index + 1}/{num_images} images")
    f.write("]")
    return total


def ensure_data(*, work_dir: str, seed: int, num_images: int, dets_per_image: int) -> dict:
    """Generate (or reuse) the data set; returns its paths and counts."""
    paths = data_paths(
        work_dir=work_dir, seed=seed, num_images=num_images, dets_per_image=dets_per_image
    )
    if all(os.path.exists(paths[k]) for k in ("gt", "results", "meta")):
        with open(paths["meta"]) as f:
            return dict(json.load(f), **paths)  # paths of this work dir, wherever it moved
    from efl_d2._atomic import atomic_write
    from efl_d2.evaluation.synthetic_lvis import generate

    os.makedirs(work_dir, exist_ok=True)
    t0 = time.perf_counter()
    gt, detections = generate(seed=seed, num_images=num_images, dets_per_image=dets_per_image)
    atomic_write(paths["gt"], lambda f: json.dump(gt, f), mode="w")
    counts = {}
    atomic_write(
        paths["results"],
        lambda f: counts.update(
            detections=_write_results(f=f, detections=detections, num_images=num_images)
        ),
        mode="w",
    )
    meta = dict(
        paths,
        images=len(gt["images"]),
        annotations=len(gt["annotations"]),
        detections=counts["detections"],
        generate_s=round(time.perf_counter() - t0, 1),
    )
    atomic_write(paths["meta"], lambda f: json.dump(meta, f, indent=1), mode="w")
    return meta


# --------------------------------------------------------------------------------------------
# One method in one fresh process
# --------------------------------------------------------------------------------------------


def _proc_status_bytes(*, key: str, pid: int | str = "self") -> int | None:
    """A memory figure (VmHWM: peak RSS, VmRSS: RSS) of one process from /proc/<pid>/status
    (Linux); None where unavailable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _sample_descendants(*, me, peaks: dict[int, int]) -> None:
    import psutil

    for child in me.children(recursive=True):
        try:
            peak = _proc_status_bytes(key="VmHWM", pid=child.pid) or child.memory_info().rss
        except psutil.Error:
            continue
        peaks[child.pid] = max(peak, peaks.get(child.pid, 0))


@contextlib.contextmanager
def descendant_peaks(*, interval_s: float = 0.1) -> Iterator[dict[int, int]]:
    """Yields {pid: peak RSS bytes} of every descendant process, sampled in a thread (a worker's
    growth in its last interval_s before exiting is missed)."""
    import psutil

    peaks: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while True:
            _sample_descendants(me=me, peaks=peaks)
            if stop.wait(interval_s):
                break

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()


def _baseline_fn():
    """detectron2's LVIS scoring step, imported (and lvis patched for numpy 2) up front."""
    import lvis
    from detectron2.evaluation.lvis_evaluation import _evaluate_predictions_on_lvis

    from efl_d2.data import patch_lvis_for_numpy2

    patch_lvis_for_numpy2()

    def run(gt_path: str, results: list, max_dets: int, workers: int) -> dict:
        lvis_gt = lvis.LVIS(gt_path)
        return _evaluate_predictions_on_lvis(lvis_gt, results, "bbox", max_dets_per_image=max_dets)

    return run, _evaluate_predictions_on_lvis


def _ours_fn():
    """efl_d2's exact evaluator, imported up front."""
    from efl_d2.evaluation import evaluate_lvis

    def run(gt_path: str, results: list, max_dets: int, workers: int) -> dict:
        return evaluate_lvis(gt_path, results, max_dets_per_image=max_dets, num_workers=workers)

    return run, evaluate_lvis


def _source_file(fn) -> str:
    return getattr(sys.modules.get(fn.__module__), "__file__", None) or "?"


def _cpu_s(*, before: tuple, after: tuple) -> float:
    return sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(before, after))


def _rusages() -> tuple:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)


def child_main(*, method: str, gt_path: str, results_path: str, workers: int, max_dets: int):
    """Body of one measured subprocess: import, load, evaluate, print one tagged JSON line."""
    t0 = time.perf_counter()
    run, fn = _baseline_fn() if method == "baseline" else _ours_fn()
    import_s = time.perf_counter() - t0
    _log(f"  {method}: {fn.__module__}.{fn.__name__} from {_source_file(fn)}")
    t0 = time.perf_counter()
    if method == "ours-file":  # the offline path: evaluate_lvis reads the json itself, as arrays
        results = results_path
    else:
        with open(results_path) as f:
            results = json.load(f)
    load_s = time.perf_counter() - t0
    rss_before = _proc_status_bytes(key="VmRSS")
    before = _rusages()
    with descendant_peaks() as peaks:
        t1 = time.perf_counter()
        metrics = run(gt_path, results, max_dets, workers)
        wall_s = time.perf_counter() - t1
    after = _rusages()
    main_peak = _proc_status_bytes(key="VmHWM") or after[0].ru_maxrss * 1024
    record = {
        "method": method,
        "workers": workers,
        "metrics": {k: float(metrics[k]) for k in METRICS},
        "function": f"{fn.__module__}.{fn.__name__}",
        "function_file": _source_file(fn),
        "import_s": import_s,
        "load_s": load_s,
        "rss_before_eval_gib": (rss_before or 0) / GIB,
        "wall_s": wall_s,
        "cpu_s": _cpu_s(before=before, after=after),
        "peak_rss_main_gib": main_peak / GIB,
        "peak_rss_worker_max_gib": max(peaks.values(), default=0) / GIB,
        "descendants_seen": len(peaks),
        "ru_maxrss_self_gib": after[0].ru_maxrss * 1024 / GIB,
        "ru_maxrss_children_gib": after[1].ru_maxrss * 1024 / GIB,
    }
    print(RESULT_TAG + json.dumps(record), flush=True)


def _run_tool_subprocess(*, args: list[str], what: str, timeout_s: float | None) -> dict:
    """Run this file with args in a fresh interpreter; returns its tagged JSON record."""
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}; its stderr is above)")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def generate_main(*, work_dir: str, seed: int, num_images: int, dets_per_image: int) -> None:
    meta = ensure_data(
        work_dir=work_dir, seed=seed, num_images=num_images, dets_per_image=dets_per_image
    )
    print(RESULT_TAG + json.dumps(meta), flush=True)


# --------------------------------------------------------------------------------------------
# Parent: plan, run, compare, report
# --------------------------------------------------------------------------------------------


def plan_runs(
    *, scale: float, baseline_scale: float, skip_baseline: bool, workers: Sequence[int]
) -> list[tuple[float, str, int]]:
    """(scale, method, workers) in run order: per scale the baseline first, then ours in-process
    and with each worker count; ours also runs at the baseline's scale when that differs."""
    ours = [("ours", w) for w in dict.fromkeys([0, *workers])]
    scales = [scale] if skip_baseline else list(dict.fromkeys([baseline_scale, scale]))
    runs = []
    for s in scales:
        if not skip_baseline and s == baseline_scale:
            runs.append((s, "baseline", 0))
        runs.extend((s, m, w) for m, w in ours)
    # the offline tool's path (results read from the json as arrays), once, at --scale
    runs.append((scale, "ours-file", max([0, *workers])))
    return runs


def max_abs_diff(*, a: dict, b: dict) -> float:
    """Max |a[k] - b[k]| over the nine metrics; NaN in both counts as equal, in one as inf."""
    diffs = []
    for k in METRICS:
        x, y = a[k], b[k]
        if math.isnan(x) or math.isnan(y):
            diffs.append(0.0 if math.isnan(x) and math.isnan(y) else math.inf)
        else:
            diffs.append(abs(x - y))
    return max(diffs)


def compare(*, rows: list[dict]) -> None:
    """Add wall_ratio and max_abs_diff to every row, against the baseline at the same scale or,
    without one, against ours in-process at that scale (``reference`` says which; "self" for the
    row the others compare with)."""
    for row in rows:
        same = [r for r in rows if r["scale"] == row["scale"]]
        baseline = next((r for r in same if r["method"] == "baseline"), None)
        in_process = next((r for r in same if r["method"] == "ours" and r["workers"] == 0), None)
        ref = baseline or in_process
        row["reference"] = "baseline" if baseline else "ours in-process"
        if ref is row:
            row["reference"] = "self"
        row["wall_ratio"] = row["wall_s"] / ref["wall_s"] if baseline else None
        diff = ref is not None and ref is not row
        row["max_abs_diff"] = max_abs_diff(a=row["metrics"], b=ref["metrics"]) if diff else None
        if row["method"] == "baseline":
            row["max_abs_diff"] = 0.0


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_table(*, rows: list[dict]) -> str:
    header = (
        "| method | workers | scale (images) | load s | wall s | CPU s | peak RSS main GiB "
        "| peak RSS worker max GiB | wall vs baseline | max abs metric diff |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in rows:
        workers = "-" if r["method"] == "baseline" else ("0 (in-process)" if not r["workers"]
                                                         else str(r["workers"]))  # fmt: skip
        worker_peak = _fmt(r["peak_rss_worker_max_gib"], ".2f") if r["descendants_seen"] else "-"
        ratio = _fmt(r["wall_ratio"], ".3f") + ("x" if r["wall_ratio"] is not None else "")
        diff = _fmt(r["max_abs_diff"], ".3g")
        if r["reference"] == "ours in-process":
            diff += " (vs ours in-process)"
        elif r["reference"] == "self" and r["method"] != "baseline":
            diff = "reference"
        lines.append(
            f"| {r['method']} | {workers} | {r['scale']:g} ({r['images']}) | {r['load_s']:.1f} "
            f"| {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_main_gib']:.2f} "
            f"| {worker_peak} | {ratio} | {diff} |"
        )
    return "\n".join(lines)


def _data_summary(*, data: dict, baseline_scale: float | None) -> str:
    parts = [
        f"scale {s:g}: {d['images']} images, {d['annotations']} annotations, "
        f"{d['detections']} detections"
        for s, d in data.items()
    ]
    text = "Synthetic LVIS v1 val (1203 categories): " + "; ".join(parts) + "."
    if baseline_scale is None:
        return text + " Baseline skipped (--skip-baseline)."
    if len(data) > 1:
        text += (
            f" The baseline ran at --baseline-scale {baseline_scale:g} only; rows at other scales"
            " compare with ours in-process."
        )
    return text


def _measure(*, run: tuple, data: dict, max_dets: int, timeout_s: float | None) -> dict:
    scale, method, workers = run
    d = data[scale]
    _log(f"running {method} (workers={workers}) at scale {scale:g} ...")
    record = _run_tool_subprocess(
        args=["--child", method, "--child-gt", d["gt"], "--child-results", d["results"],
              "--child-workers", str(workers), "--max-dets-per-image", str(max_dets)],
        what=f"{method} (workers={workers}) at scale {scale:g}",
        timeout_s=timeout_s,
    )  # fmt: skip
    wall, ap = record["wall_s"], record["metrics"]["AP"]
    _log(f"  {method} (workers={workers}): wall {wall:.1f} s, AP {ap:.3f}")
    return dict(record, scale=scale, images=d["images"], detections=d["detections"])


def benchmark(args: argparse.Namespace) -> int:
    baseline_scale = args.scale if args.baseline_scale is None else args.baseline_scale
    runs = plan_runs(
        scale=args.scale,
        baseline_scale=baseline_scale,
        skip_baseline=args.skip_baseline,
        workers=args.workers,
    )
    data = {}
    for scale in dict.fromkeys(s for s, _, _ in runs):
        num_images = num_images_for_scale(scale=scale)
        _log(f"data at scale {scale:g} ({num_images} images) in {args.work_dir} ...")
        try:
            data[scale] = _run_tool_subprocess(
                args=["--child", "generate", "--work-dir", args.work_dir, "--seed", str(args.seed),
                      "--child-num-images", str(num_images),
                      "--dets-per-image", str(args.dets_per_image)],
                what=f"data generation at scale {scale:g}",
                timeout_s=None,
            )  # fmt: skip
        except RuntimeError as e:
            _log(f"FAILED: {e}")
            return 1
    rows, failed = [], []
    for run in runs:
        try:
            rows.append(
                _measure(
                    run=run, data=data, max_dets=args.max_dets_per_image, timeout_s=args.timeout
                )
            )
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            _log(f"FAILED: {e}")
            failed.append(run)
    compare(rows=rows)
    summary = _data_summary(
        data=data, baseline_scale=None if args.skip_baseline else baseline_scale
    )
    print(summary + "\n\n" + markdown_table(rows=rows))
    if args.json:
        from efl_d2._atomic import atomic_write

        table = {"summary": summary, "data": list(data.values()), "rows": rows, "failed": failed}
        atomic_write(args.json, lambda f: json.dump(table, f, indent=1), mode="w")
    if failed:
        return 1
    bad = [r for r in rows if r["max_abs_diff"] is not None and r["max_abs_diff"] > args.tolerance]
    if bad:
        _log(f"metrics differ by more than --tolerance {args.tolerance:g} in {len(bad)} row(s)")
        return 2
    return 0


def _positive_fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n"
        "  %(prog)s --scale 0.02\n"
        "  %(prog)s --scale 1 --baseline-scale 0.2 --workers 1 2 4 --json bench.json\n"
        "  %(prog)s --scale 0.1 --skip-baseline\n\n"
        "The module docstring (top of this file) describes the data generator's rule.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scale",
        type=_positive_fraction,
        default=1.0,
        help="fraction of the 19,809 LVIS v1 val images to use (default 1.0)",
    )
    p.add_argument(
        "--baseline-scale",
        type=_positive_fraction,
        default=None,
        help="run the baseline at this fraction instead (it needs ~22 GiB at 1.0); "
        "ours then runs at both scales (default: --scale)",
    )
    p.add_argument("--skip-baseline", action="store_true", help="run only ours")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="num_workers values for ours besides 0 (in-process); default: 1 2",
    )
    p.add_argument(
        "--dets-per-image",
        type=int,
        default=300,
        help="detections generated per image (default 300)",
    )
    p.add_argument(
        "--max-dets-per-image",
        type=int,
        default=300,
        help="max_dets_per_image passed to both methods (default 300)",
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument(
        "--work-dir",
        default=os.path.join(tempfile.gettempdir(), "efl_d2_lvis_eval_bench"),
        help="where generated JSON files go and are reused from (default: %(default)s)",
    )
    p.add_argument("--json", metavar="OUT", help="also write the table data to this JSON file")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per method run")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-9,
        help="exit with status 2 if a metric differs from the reference by more "
        "(percent points; default 1e-9)",
    )
    for name in (
        "--child",
        "--child-gt",
        "--child-results",
        "--child-workers",
        "--child-num-images",
    ):
        p.add_argument(name, help=argparse.SUPPRESS)  # internal: one measured subprocess
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child == "generate":
        generate_main(
            work_dir=args.work_dir,
            seed=args.seed,
            num_images=int(args.child_num_images),
            dets_per_image=args.dets_per_image,
        )
        return 0  # fmt: skip
    if args.child in ("baseline", "ours", "ours-file"):
        child_main(
            method=args.child,
            gt_path=args.child_gt,
            results_path=args.child_results,
            workers=int(args.child_workers),
            max_dets=args.max_dets_per_image,
        )
        return 0  # fmt: skip
    if any(w < 1 for w in args.workers):
        build_parser().error("--workers values must be >= 1 (0, in-process, always runs)")
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
