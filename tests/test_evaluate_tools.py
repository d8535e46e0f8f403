"""tools/evaluate_lvis.py and tools/evaluate_openimages.py on hand-made files: results they cannot
score are refused (exit status 2, one ``error:`` message with a count per kind of problem, nothing
written); good ones are scored and ``--json`` writes strict JSON (null for an undefined metric)."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest

from efl_d2.evaluation.lvis_inputs import lvis_results_problems, read_lvis_results
from efl_d2.evaluation.synthetic_lvis import box_annotations, lvis_category, lvis_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluate_lvis_tool():
    return _load_tool("evaluate_lvis")


@pytest.fixture(scope="module")
def evaluate_openimages_tool():
    return _load_tool("evaluate_openimages")


def strict_loads(text: str):
    """``json.loads`` that fails on NaN, Infinity and -Infinity (not JSON, though Python writes
    them by default)."""

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- LVIS

BOX_A, BOX_B = [10.0, 10.0, 50.0, 40.0], [100.0, 80.0, 60.0, 60.0]
# no rare category: APr is undefined
GT = {
    "images": [lvis_image(1, neg_category_ids=[2]), lvis_image(2), lvis_image(3)],
    "annotations": box_annotations([(1, 1, BOX_A), (2, 2, BOX_B), (3, 1, BOX_B)]),
    "categories": [lvis_category(1, "c", 2), lvis_category(2, "f", 1)],
}


def det(img, cat, box, score=0.9):
    return {"image_id": img, "category_id": cat, "bbox": list(box), "score": score}


def good_results():
    """A detection on every GT box, a false positive, and a zero-width box (legal: a false
    positive too)."""
    return [
        det(1, 1, BOX_A),
        det(2, 2, BOX_B, 0.8),
        det(3, 1, BOX_B, 0.7),
        det(1, 2, [0.0, 0.0, 20.0, 20.0], 0.5),
        det(3, 1, [5.0, 5.0, 0.0, 10.0], 0.3),
    ]


def write_case(tmp_path, results, gt=GT):
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))  # NaN / Infinity as Python writes them
    return str(gt_path), str(res_path)


def refused(tool, capsys, argv) -> str:
    """stderr of ``tool.main(argv)``, which must exit with status 2 before printing any table."""
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("error:") == 1, err
    assert "AP" not in out  # nothing was scored
    return err


def with_changes(changes: dict) -> list:
    results = good_results()
    for i, fields in changes.items():
        results[i].update(fields)
    return results


BAD_LVIS_RESULTS = {
    "empty": ([], "the results list is empty"),
    "unknown category": (
        with_changes({1: {"category_id": 99}, 3: {"category_id": 7}}),
        (
            "2 result(s) with a category_id that is not among the ground truth's 2 categories; "
            "the first: results[1]: image_id 2, category_id 99"
        ),
    ),
    "unknown image": (
        with_changes({2: {"image_id": 42}}),
        (
            "1 result(s) with an image_id that is not among the ground truth's 3 images; "
            "the first: results[2]: image_id 42"
        ),
    ),
    "NaN score": (
        [{**r, "score": float("nan")} for r in good_results()],
        "5 result(s) with a score that is NaN or infinite; the first: results[0]",
    ),
    "inf box": (
        with_changes({4: {"bbox": [5.0, float("inf"), 3.0, 4.0]}}),
        (
            "1 result(s) with a bbox value that is NaN or infinite; "
            "the first: results[4]: image_id 3, category_id 1, bbox [5.0, inf, 3.0, 4.0]"
        ),
    ),
    "negative width": (
        with_changes({3: {"bbox": [50.0, 50.0, -5.0, 10.0]}}),
        (
            "1 result(s) with a negative bbox width or height; "
            "the first: results[3]: image_id 1, category_id 2, bbox [50.0, 50.0, -5.0, 10.0], "
            "score 0.5"
        ),
    ),
}


@pytest.mark.parametrize("case", list(BAD_LVIS_RESULTS))
def test_lvis_tool_refuses_results_it_cannot_score(case, tmp_path, capsys, evaluate_lvis_tool):
    results, expected = BAD_LVIS_RESULTS[case]
    gt_path, res_path = write_case(tmp_path, results)
    out_json = tmp_path / "metrics.json"
    err = refused(capsys=capsys, tool=evaluate_lvis_tool,
                  argv=[gt_path, res_path, "--json", str(out_json)])  # fmt: skip
    assert err.startswith(f"error: {res_path}: cannot score it: 1 problem(s)\n"), err
    assert f"  - {expected}" in err
    assert "correct or drop these results" in err
    assert not out_json.exists()


def test_lvis_tool_lists_every_kind_of_problem(tmp_path, capsys, evaluate_lvis_tool):
    results = with_changes(
        {
            0: {"category_id": 99},
            1: {"score": float("nan"), "bbox": [1.0, 2.0, 3.0, -4.0]},
            2: {"score": float("-inf")},
            3: {"image_id": 7, "bbox": [float("nan")] * 4},
        }
    )
    gt_path, res_path = write_case(tmp_path, results)
    err = refused(evaluate_lvis_tool, capsys, [gt_path, res_path])
    assert err.startswith(f"error: {res_path}: cannot score it: 5 problem(s)\n"), err
    lines = [line for line in err.splitlines() if line.startswith("  - ")]
    assert [line.split(" result(s) with ")[0] for line in lines] == [
        "  - 1",  # image_id 7
        "  - 1",  # category_id 99
        "  - 2",  # scores NaN and -inf
        "  - 1",  # NaN bbox
        "  - 1",  # negative height (of a finite bbox)
    ]
    assert "image_id" in lines[0] and "results[3]" in lines[0]
    assert "category_id" in lines[1] and "results[0]" in lines[1]
    assert "score" in lines[2] and "results[1]" in lines[2]
    assert "bbox value" in lines[3] and "results[3]" in lines[3]
    assert "negative" in lines[4] and "results[1]" in lines[4]


def test_lvis_tool_scores_good_results_and_writes_strict_json(tmp_path, capsys, evaluate_lvis_tool):
    from efl_d2.evaluation import evaluate_lvis

    gt_path, res_path = write_case(tmp_path, good_results())
    out_json = tmp_path / "metrics.json"
    metrics = evaluate_lvis_tool.main([gt_path, res_path, "--json", str(out_json)])
    assert metrics == evaluate_lvis(GT, good_results())
    assert capsys.readouterr().err.count("error:") == 0
    written = strict_loads(out_json.read_text())
    assert written["APr"] is None  # no rare category: undefined (-100 in the table)
    assert metrics["APr"] == -100.0
    assert written["AP"] == pytest.approx(100.0) and written["APf"] == pytest.approx(100.0)
    assert set(written) == set(metrics)
    assert all(v is None or v >= 0 for v in written.values())


def test_lvis_tool_json_has_null_for_nan_metrics(evaluate_lvis_tool):
    metrics = {"AP": float("nan"), "APr": -100.0, "APc": float("inf"), "APf": 0.0, "AP50": 55.5}
    strict = evaluate_lvis_tool.strict_json_metrics(metrics)
    assert strict == {"AP": None, "APr": None, "APc": None, "APf": 0.0, "AP50": 55.5}
    assert strict_loads(json.dumps(strict, allow_nan=False)) == strict


def test_lvis_tool_image_ids_outside_the_restriction_are_fine(tmp_path, capsys, evaluate_lvis_tool):
    gt_path, res_path = write_case(tmp_path, good_results())
    metrics = evaluate_lvis_tool.main([gt_path, res_path, "--image-ids", "2"])
    assert metrics["APf"] == pytest.approx(100.0)
    capsys.readouterr()
    err = refused(evaluate_lvis_tool, capsys, [gt_path, res_path, "--image-ids", "2", "9"])
    assert "image_ids not in the ground truth: [9]" in err


def test_lvis_tool_other_bad_input_is_an_error_line(tmp_path, capsys, evaluate_lvis_tool):
    gt_path, res_path = write_case(tmp_path, good_results())
    err = refused(evaluate_lvis_tool, capsys, [gt_path, str(tmp_path / "none.json")])
    assert err == f"error: {tmp_path / 'none.json'}: no such file\n"
    (tmp_path / "list.json").write_text("[]")
    err = refused(evaluate_lvis_tool, capsys, [str(tmp_path / "list.json"), res_path])
    assert "not an LVIS ground truth" in err
    broken = {**GT, "annotations": [{k: v for k, v in GT["annotations"][0].items() if k != "area"}]}
    gt_path, res_path = write_case(tmp_path, good_results(), gt=broken)
    err = refused(evaluate_lvis_tool, capsys, [gt_path, res_path])
    assert err == f"error: {gt_path}: a record lacks the field 'area'\n"
    err = refused(evaluate_lvis_tool, capsys,
                  [gt_path, res_path, "--json", str(tmp_path / "no" / "m.json")])  # fmt: skip
    assert "no such directory" in err


def test_results_problems_of_arrays_and_of_dicts_agree():
    results = with_changes({0: {"category_id": 99}, 2: {"bbox": [1.0, 1.0, 2.0, -1.0]}})
    arrays = {
        "image_id": np.array([r["image_id"] for r in results]),
        "category_id": np.array([r["category_id"] for r in results]),
        "bbox": np.array([r["bbox"] for r in results]),
        "score": np.array([r["score"] for r in results]),
    }
    problems = lvis_results_problems(GT, results)
    assert len(problems) == 2 and problems == lvis_results_problems(GT, arrays)
    assert lvis_results_problems(GT, good_results()) == []  # zero width is legal


def test_results_problems_of_a_results_file(tmp_path):
    _, res_path = write_case(tmp_path, with_changes({4: {"score": float("inf")}}))
    (problem,) = lvis_results_problems(GT, read_lvis_results(res_path))
    assert problem.startswith("1 result(s) with a score that is NaN or infinite")
    assert "results[4]: image_id 3, category_id 1, bbox [5.0, 5.0, 0.0, 10.0], score inf" in problem


# ----------------------------------------------------------------------------- OpenImages

PRED_HEADER = "ImageID,LabelName,Score,XMin,XMax,YMin,YMax"


def openimages_args(tmp_path, predictions: list) -> list:
    """Files of a two-class ground truth (no /m/cat box: its AP is undefined) and the tool's
    arguments with these prediction rows."""
    (tmp_path / "classes.csv").write_text("/m/dog,Dog\n/m/cat,Cat\n")
    (tmp_path / "boxes.csv").write_text(
        "ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\n"
        "a,/m/dog,0.1,0.5,0.1,0.5,0\nb,/m/dog,0.2,0.6,0.2,0.7,0\n"
    )
    (tmp_path / "labels.csv").write_text(
        "ImageID,LabelName,Confidence\na,/m/dog,1\nb,/m/dog,1\nb,/m/cat,0\n"
    )
    (tmp_path / "pred.csv").write_text("\n".join([PRED_HEADER, *predictions]) + "\n")
    return [
        "--boxes", str(tmp_path / "boxes.csv"), "--labels", str(tmp_path / "labels.csv"),
        "--classes", str(tmp_path / "classes.csv"), "--predictions", str(tmp_path / "pred.csv"),
        "--json", str(tmp_path / "out.json"),
    ]  # fmt: skip


GOOD_PREDICTIONS = ["a,/m/dog,0.9,0.1,0.5,0.1,0.5", "b,/m/dog,0.8,0.2,0.6,0.2,0.7",
                    "b,/m/cat,0.4,0.0,0.3,0.0,0.3"]  # fmt: skip


def test_openimages_tool_scores_and_writes_strict_json(tmp_path, capsys, evaluate_openimages_tool):
    out = evaluate_openimages_tool.main(openimages_args(tmp_path, GOOD_PREDICTIONS))
    assert out["mAP"] == pytest.approx(1.0) and math.isnan(out["AP"]["/m/cat"])
    written = strict_loads((tmp_path / "out.json").read_text())
    assert written == {"mAP": pytest.approx(1.0), "AP": {"/m/dog": 1.0, "/m/cat": None}}


@pytest.mark.parametrize(
    "predictions, expected",
    [
        ([], "no predictions"),
        (
            [*GOOD_PREDICTIONS, "b,/m/dog,nan,0.2,0.6,0.2,0.7", "a,/m/dog,inf,0.1,0.5,0.1,0.5"],
            (
                "2 prediction(s) with a Score that is NaN or infinite; the first: prediction 3 "
                "(line 5): ImageID b, LabelName /m/dog, Score nan"
            ),
        ),
        (
            ["a,/m/dog,0.9,0.1,inf,0.1,0.5", *GOOD_PREDICTIONS],
            (
                "1 prediction(s) with an XMin/XMax/YMin/YMax that is NaN or infinite; the first: "
                "prediction 0 (line 2): ImageID a, LabelName /m/dog, Score 0.9, XMin 0.1, XMax inf"
            ),
        ),
    ],
    ids=["empty", "NaN score", "inf box"],
)
def test_openimages_tool_refuses_predictions_it_cannot_score(
    predictions, expected, tmp_path, capsys, evaluate_openimages_tool
):
    args = openimages_args(tmp_path, predictions)
    err = refused(evaluate_openimages_tool, capsys, args)
    assert err.startswith(f"error: {tmp_path / 'pred.csv'}: cannot score it: 1 problem(s)\n")
    assert f"  - {expected}" in err
    assert not (tmp_path / "out.json").exists()


def test_openimages_tool_bad_arguments_are_error_lines(tmp_path, capsys, evaluate_openimages_tool):
    args = openimages_args(tmp_path, GOOD_PREDICTIONS)
    err = refused(evaluate_openimages_tool, capsys, [*args, "--expand-detections"])
    assert err == "error: --expand-detections needs --hierarchy\n"
    (tmp_path / "pred.csv").write_text(f"{PRED_HEADER}\na,/m/fox,0.9,0.1,0.5,0.1,0.5\n")
    err = refused(evaluate_openimages_tool, capsys, args)
    assert "LabelName '/m/fox' is not a class" in err
