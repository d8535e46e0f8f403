#!/usr/bin/env python
"""The long-tail study on mini-LVIS: focal vs EFL (and its ablations and s sweep), end to end.

Trains every variant with N seeds through the project's training engine (``tools/train_net.py``,
one subprocess per run), evaluates with ``LVISEvaluator``, and writes a results table (Markdown +
JSON) and plots. A run's numbers are read from the files it wrote: ``metrics.json`` (training
scalars and the box AP) and the evaluator's per-category report
(``inference/per_category_ap_bbox.json``). Finished runs are not redone: a run is finished when its
folder holds ``study_result.json`` (written after training, evaluation and reading succeeded), so
an interrupted study continues where it stopped when the same command is run again.

This file is the command line; ``study_plan.py`` holds the variants and modes, ``study_runs.py``
one run and its numbers, ``study_report.py`` the table and plots.

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
import json
import os
import sys
import time

from study_plan import MODES, VARIANTS, Plan
from study_report import (
    aggregate,
    markdown,
    plots,
    read_summary,
    same_table,
)
from study_runs import (
    HERE,
    REPO,
    RESULT_FILE,
    load_average,
    prepare_dataset,
    run_all,
    run_dir,
    say,
)


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
    load0 = load_average()

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
        "loadavg_end": load_average(),
        "wall_s": time.time() - t0,
        "runs_wall_s": sum(r["wall_s"] for rs in runs.values() for r in rs),
        "runs_trained": len(todo) - n_skipped,
        "runs_skipped": n_skipped,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    summary = aggregate(plan, ds, runs, conditions)
    previous = read_summary(os.path.join(res_dir, "results.json"))
    if conditions["runs_trained"] == 0 and same_table(previous, summary):
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
