"""projects/mini_lvis_study (run_study.py and its study_*.py modules): the study's pipeline on a
tiny mini-LVIS, not its numbers.

Runs the quick mode's pipeline for 2 iterations per run at 96 px on the session's small mini-LVIS:
a representative subset of the quick variants (the focal baseline, EFL and EQLv2&Focal, plus the
s = 0 alias that reuses the focal runs), then checks the tables, the plots and that a second
invocation skips the finished runs.
"""

import importlib
import json
import math
import os
import sys

import pytest
import torch
from _tiny_zoo import run_in_repo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY_DIR = os.path.join(REPO, "projects", "mini_lvis_study")
SCRIPT = os.path.join(STUDY_DIR, "run_study.py")

TINY = [
    "--max-iter",
    "2",
    "--image-size",
    "96",
    "--threads",
    "1",
    # GroupNorm(32) needs more than one value per group at P7 of a 96 px image
    "model.head.conv_dims=[64]",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
]


def _load(module: str):
    """A module of the study; its folder is on sys.path as when run_study.py runs as a script."""
    if STUDY_DIR not in sys.path:
        sys.path.insert(0, STUDY_DIR)
    return importlib.import_module(module)


def _study(args, env, tmp_path):
    proc = run_in_repo(
        [
            sys.executable,
            SCRIPT,
            "--mode",
            "quick",
            "--datasets-root",
            env["DETECTRON2_DATASETS"],
            "--output-dir",
            str(tmp_path / "runs"),
            "--results-dir",
            str(tmp_path / "results"),
            *args,
            *TINY,
        ],
        env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # the last line printed: nothing may swallow the progress output (runs end in parallel)
    assert "[study] wrote " in proc.stdout, proc.stdout[-4000:]
    return proc.stdout


def test_modes_cover_the_study_variants():
    study = _load("study_plan")
    quick = study.MODES["quick"]
    assert {"focal", "efl", "efl_wf", "efl_ff", "eqlv2"} <= set(quick.variants)
    assert {study.VARIANTS[v].scale for v in study.SWEEP} == {0, 2, 4, 8, 12}
    assert set(study.SWEEP) <= set(quick.variants)
    full = study.MODES["full"]
    assert set(full.variants) == {"focal", "efl"} and full.seeds == 6
    # aliases are not trained twice: s = 0 is the focal run, s = 8 the EFL run
    cli = _load("run_study")
    plan = cli.make_plan(cli.parse_args(["--mode", "quick"]))
    trained = plan.trained_variants()
    assert "efl_s0" not in trained and "efl_s8" not in trained and len(trained) == len(set(trained))


def test_sign_flip_p_by_hand():
    sign_flip_p = _load("study_report").sign_flip_p
    # [1, 2, 3]: of the 8 signed sums only +6 and -6 reach |6|
    assert sign_flip_p([1.0, 2.0, 3.0]) == 2 / 8
    assert sign_flip_p([-1.0, -2.0, -3.0]) == 2 / 8
    assert sign_flip_p([2.0, 1.0]) == 2 / 4  # sums 3, 1, -1, -3
    assert sign_flip_p([1.0, -1.0]) == 1.0  # observed 0: every flip reaches it
    assert sign_flip_p([3.0, -1.0, 1.0]) == 6 / 8  # |sum| 3: all but the two sums +-1
    # float sums that equal the observed one only up to rounding still count: every signed sum
    # of [0.2, -0.6, 0.6, -0.3] has |sum| >= 0.1, but two of them come out below it in floats
    assert sign_flip_p([0.1, 0.2, 0.3]) == 2 / 8
    assert sign_flip_p([0.2, -0.6, 0.6, -0.3]) == 1.0
    assert sign_flip_p([0.5, 1.5, 2.5, 3.5, 4.5, 5.5]) == 2 / 64  # the floor for 6 seeds
    for bad in ([], [1.0] * 21):
        with pytest.raises(ValueError, match="1-20 differences"):
            sign_flip_p(bad)


def test_paired_comparison_by_seed():
    study = _load("study_report")

    def run(seed, ap, loss=None):
        metrics = {"AP": ap, "APr": ap / 2, "APc": ap, "APf": float("nan")}
        return {"seed": seed, "metrics": metrics, "train_loss_cls": loss}

    runs = {
        "focal": [run(0, 10.0, 0.5), run(1, 12.0, 0.4), run(2, 11.0, 0.3)],
        "efl": [run(2, 12.5, 0.2), run(0, 9.0, 0.6)],  # seed 1 missing: paired on 0 and 2
    }
    paired = study.paired_comparison(runs)
    assert set(paired) == {"efl"} and paired["efl"]["seeds"] == [2, 0]
    ap = paired["efl"]["AP"]
    assert ap["diffs"] == [1.5, -1.0] and ap["mean"] == 0.25 and ap["below"] == 1
    assert ap["std"] == pytest.approx(math.sqrt(2 * 1.25**2))
    assert paired["efl"]["APr"]["diffs"] == [0.75, -0.5]
    assert paired["efl"]["train_loss_cls"]["diffs"] == pytest.approx([-0.1, 0.1])
    assert "APf" not in paired["efl"]  # NaN metric: not compared
    # 21 seeds: no exact test, and no crash after the training is done
    many = {v: [run(s, 10.0 + (v == "efl") * s) for s in range(21)] for v in ("focal", "efl")}
    big = study.paired_comparison(many)["efl"]
    assert big["AP"]["p_sign_flip"] is None and "train_loss_cls" not in big
    assert study.paired_comparison({"efl": runs["efl"]}) == {}  # no baseline trained


def test_late_training_loss_is_the_last_third():
    late = _load("study_runs").late_training_loss
    rows = [{"iteration": i, "loss_cls": float(i)} for i in range(9)]
    rows.insert(4, {"iteration": 8, "bbox/AP": 1.0})  # an evaluation row carries no loss
    assert late(rows, max_iter=9) == (6 + 7 + 8) / 3  # 7, 8 and 9 iterations done > 6
    assert late(rows[:3], max_iter=9) is None


def test_metrics_tail_reads_whole_lines_only(tmp_path):
    path = tmp_path / "metrics.json"
    tail = _load("study_runs").MetricsTail(str(path))
    assert tail.new_rows() == []  # not written yet
    path.write_text('{"iteration": 0}\n{"iter')  # the second row is being written
    assert tail.new_rows() == [{"iteration": 0}]
    with path.open("a") as f:
        f.write('ation": 1}\n')
    assert tail.new_rows() == [{"iteration": 1}] and tail.new_rows() == []


def test_per_category_ap_is_read_from_the_evaluators_report(tmp_path):
    from efl_d2.evaluation import write_per_category_report

    study = _load("study_runs")
    ds = {"categories": [{"id": 3}, {"id": 5}]}
    with pytest.raises(RuntimeError, match="per_category_ap_bbox.json is missing"):
        study.read_run_category_ap(str(tmp_path), ds, box_ap=1.0)
    # no detections: the evaluator writes no report, and every AP is undefined
    assert all(
        math.isnan(v) for v in study.read_run_category_ap(str(tmp_path), ds, math.nan).values()
    )
    rows = [
        {"category_id": c, "name": str(c), "frequency": "r", "image_count": 1, "ap": ap}
        for c, ap in ((3, 0.25), (5, math.nan))
    ]
    write_per_category_report(rows, str(tmp_path / "inference"), prefix="per_category_ap_bbox")
    got = study.read_run_category_ap(str(tmp_path), ds, box_ap=1.0)
    assert list(got) == ["3", "5"] and got["3"] == 25.0 and math.isnan(got["5"])


@pytest.mark.slow
def test_quick_study_pipeline_and_resume(tmp_path, env_with_datasets):
    variants = "focal,efl,eqlv2,efl_s0"
    out = _study(["--variants", variants, "--seeds", "1"], env_with_datasets, tmp_path)
    assert out.count("training 2 iterations") == 3  # efl_s0 reuses the focal run
    res_dir = tmp_path / "results"
    summary = json.loads((res_dir / "results.json").read_text())
    assert list(summary["variants"]) == variants.split(",")
    assert summary["variants"]["efl_s0"]["same_as"] == "focal"
    n_cats = len(summary["dataset"]["categories"])
    for name, e in summary["variants"].items():
        assert e["seeds"] == [0]
        for k in ("AP", "APr", "APc", "APf"):
            assert math.isfinite(e[k]["mean"]), (name, k)
        assert len(e["per_category_ap"]) == n_cats
    md = (res_dir / "results.md").read_text()
    for name in ("focal", "efl", "eqlv2"):
        assert f"(`{name}`)" in md
    assert "| 0 |" in md  # the sweep's s = 0 row
    for png in ("ap_by_group.png", "ap_per_category.png", "efl_gamma.png"):
        assert (res_dir / png).stat().st_size > 1000
    efl_run = json.loads((tmp_path / "runs" / "efl" / "seed0" / "study_result.json").read_text())
    assert "efl/gamma_r" in efl_run["efl_trace"]
    assert len(efl_run["loss_buffers"]["pos_neg"]) == n_cats
    # The gradient-statistics table: EFL's and EQLv2's final ratios, from model_final.pth.
    buffers = torch.load(
        tmp_path / "runs" / "efl" / "seed0" / "model_final.pth", weights_only=False
    )["model"]
    ratio = buffers["cls_loss.pos_grad"].double() / (buffers["cls_loss.neg_grad"].double() + 1e-10)
    rare = [i for i, c in enumerate(summary["dataset"]["categories"]) if c["frequency"] == "r"]
    stats = summary["variants"]["efl"]["loss_statistics"]["0"]["r"]
    assert stats["ratio_min"] == pytest.approx(ratio[rare].min().item(), rel=1e-6)
    assert stats["ratio_median"] == pytest.approx(ratio[rare].quantile(0.5).item(), rel=1e-6)
    assert stats["ratio_below_1"] == int((ratio[rare] < 1).sum())
    assert set(summary["variants"]["eqlv2"]["loss_statistics"]) == {"0"}
    assert summary["variants"]["focal"]["loss_statistics"] == {}  # focal keeps no statistics
    assert "| `efl` | 0 |" in md and "| `eqlv2` | 0 |" in md and "| `focal` | 0 |" not in md
    # Paired by seed against focal: the per-seed differences, and the late training loss read
    # back from each run's metrics.json.
    paired = summary["paired"]
    assert set(paired) == {"efl", "eqlv2"}
    per_seed = {v: summary["variants"][v]["per_seed"]["0"] for v in ("focal", "efl")}
    for k in ("AP", "APr", "APc", "APf"):
        assert paired["efl"][k]["diffs"] == [per_seed["efl"][k] - per_seed["focal"][k]]
        assert paired["efl"][k]["p_sign_flip"] == 1.0  # one seed: a flip always reaches it
    late = {}
    for v in ("focal", "efl"):
        rows = [json.loads(x) for x in (tmp_path / "runs" / v / "seed0" / "metrics.json").open()]
        late[v] = [r["loss_cls"] for r in rows if "loss_cls" in r and r["iteration"] == 1]
        assert len(late[v]) == 1  # 2 iterations: the last row is the last third
    assert paired["efl"]["train_loss_cls"]["diffs"] == pytest.approx(
        [late["efl"][0] - late["focal"][0]], rel=1e-12
    )
    assert "| `efl` | 1 |" in md and "| variant − focal |" in md

    # a second invocation with one more seed for focal: seed 0 is skipped, seed 1 trained
    out = _study(["--variants", "focal", "--seeds", "2"], env_with_datasets, tmp_path)
    assert "focal seed 0: finished before, skipped" in out
    assert out.count("training 2 iterations") == 1
    summary = json.loads((res_dir / "results.json").read_text())
    focal = summary["variants"]["focal"]
    assert focal["seeds"] == [0, 1] and set(focal["per_seed"]) == {"0", "1"}
    assert math.isfinite(focal["AP"]["mean"]) and math.isfinite(focal["AP"]["std"])
    assert "± " in (res_dir / "results.md").read_text()
    # Re-running it trains nothing and keeps the record of the invocation that trained the runs.
    out = _study(["--variants", "focal", "--seeds", "2"], env_with_datasets, tmp_path)
    assert "training 2 iterations" not in out
    again = json.loads((res_dir / "results.json").read_text())
    assert (
        again["conditions"] == summary["conditions"] and summary["conditions"]["runs_trained"] == 1
    )

    # Reproducible: focal seed 0 retrained from scratch elsewhere, alone (--jobs 1) instead of
    # beside other runs, ends with bit-identical weights and the same metrics.
    rerun = tmp_path / "rerun"
    _study(
        ["--variants", "focal", "--seeds", "1", "--jobs", "1", "--output-dir", str(rerun),
         "--results-dir", str(tmp_path / "rerun_results")],
        env_with_datasets,
        tmp_path,
    )  # fmt: skip
    first = torch.load(
        tmp_path / "runs" / "focal" / "seed0" / "model_final.pth", weights_only=False
    )
    again = torch.load(rerun / "focal" / "seed0" / "model_final.pth", weights_only=False)
    assert first["model"].keys() == again["model"].keys()
    for k, v in first["model"].items():
        assert torch.equal(v, again["model"][k]), k
    first_res, again_res = (
        json.loads((d / "focal" / "seed0" / "study_result.json").read_text())
        for d in (tmp_path / "runs", rerun)
    )
    assert first_res["metrics"] == again_res["metrics"]
    assert first_res["threads"] == again_res["threads"] == "1"
