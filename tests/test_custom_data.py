"""A user's own data (configs/custom/, efl_d2.data.custom): COCO and LVIS format end to end through
tools/train_net.py, scored as pycocotools / lvis-api score it, and every bad input refused before
iteration 0 with the file, the record and the fix."""

import argparse
import copy
import json
import math
import os
import sys

import pytest
from _lvis_cases import lvis_api_eval
from _tiny_zoo import TINY_DATA_OVERRIDES, run_in_repo, run_train_net
from detectron2.data import DatasetCatalog, MetadataCatalog

from efl_d2.categories import frequency_group
from efl_d2.engine import ConfigCheckError, preflight

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R18 = "configs/custom/atss_efl_R18.py"

# dataset category id of mini-LVIS's category k: neither contiguous nor starting at 1
NEW_ID = {k: 7 * k + 3 for k in range(1, 100)}


def _as_custom(lvis_json: dict, fmt: str) -> dict:
    """A mini-LVIS json as a user's file: category ids 10, 17, 24, ..., images by file_name, no
    LVIS fields (COCO format) or LVIS's image fields only (LVIS format), box-only annotations."""
    images = []
    for i in lvis_json["images"]:
        image = {
            "id": i["id"],
            "width": i["width"],
            "height": i["height"],
            "file_name": "/".join(i["coco_url"].split("/")[-2:]),
        }
        if fmt == "lvis":
            for k in ("neg_category_ids", "not_exhaustive_category_ids"):
                image[k] = [NEW_ID[c] for c in i[k]]
        images.append(image)
    annotations = [
        {
            "id": a["id"],
            "image_id": a["image_id"],
            "category_id": NEW_ID[a["category_id"]],
            "bbox": a["bbox"],
            "area": a["area"],
            **({"iscrowd": 0} if fmt == "coco" else {}),
        }
        for a in lvis_json["annotations"]
    ]
    categories = [{"id": NEW_ID[c["id"]], "name": c["name"]} for c in lvis_json["categories"]]
    return {"images": images, "annotations": annotations, "categories": categories}


def _write(path, obj) -> str:
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


@pytest.fixture(scope="module")
def custom_data(mini_lvis_root, tmp_path_factory):
    """{format: {"train": json path, "val": json path}, "images": image folder}."""
    out = tmp_path_factory.mktemp("custom")
    data = {"images": os.path.join(mini_lvis_root, "mini_lvis")}
    for fmt in ("coco", "lvis"):
        data[fmt] = {}
        for split in ("train", "val"):
            with open(os.path.join(mini_lvis_root, "lvis", f"mini_lvis_v1_{split}.json")) as f:
                src = json.load(f)
            data[fmt][split] = _write(out / f"{fmt}_{split}.json", _as_custom(src, fmt))
    return data


def _data_overrides(train, val, images):
    return [
        f"custom.train_json={train}",
        f"custom.train_images={images}",
        f"custom.val_json={val}",
        f"custom.val_images={images}",
    ]


def _train(tmp_path, data, fmt, env, *extra):
    out = tmp_path / f"run_{fmt}"
    proc = run_train_net(
        [
            "--config-file",
            R18,
            *_data_overrides(data[fmt]["train"], data[fmt]["val"], data["images"]),
            *TINY_DATA_OVERRIDES,
            "model.head.conv_dims=[64]",
            "train.max_iter=3",
            "train.vis_images=1",
            f"train.output_dir={out}",
            *extra,
        ],
        env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return out, next(m for m in reversed(metrics) if "bbox/AP" in m), proc.stdout + proc.stderr


def _names(json_file):
    with open(json_file) as f:
        return [c["name"] for c in sorted(json.load(f)["categories"], key=lambda c: c["id"])]


@pytest.mark.slow
def test_coco_format_data_trains_scores_as_pycocotools_and_predicts_its_own_names(
    tmp_path, custom_data, env_with_datasets
):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out, final, _ = _train(tmp_path, custom_data, "coco", env_with_datasets)
    assert "(COCO format, 10 classes: 5 rare, 4 common, 1 frequent" in (out / "log.txt").read_text()
    # the AP of the run is pycocotools' COCOeval of its results file, unchanged
    results_file = out / "inference" / "coco_instances_results.json"
    results = json.loads(results_file.read_text())
    assert results and {r["category_id"] for r in results} <= set(NEW_ID.values())
    gt = COCO(custom_data["coco"]["val"])
    ev = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    for k, m in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        want = float(ev.stats[k] * 100) if ev.stats[k] >= 0 else math.nan  # -1: no GT (NaN)
        assert final[f"bbox/{m}"] == pytest.approx(want, abs=1e-9, nan_ok=True), m
    assert final["bbox/AP"] > 0
    for m in ("APr", "APc", "APf"):
        assert f"bbox/{m}" in final
    assert (out / "inference" / "per_category_ap_bbox.csv").is_file()
    assert (out / "predictions_val.png").is_file()

    # predictions carry the dataset's class names, not LVIS's
    pred = tmp_path / "pred"
    proc = run_in_repo(
        [
            sys.executable,
            "tools/predict.py",
            "--config-file",
            R18,
            "--checkpoint",
            str(out / "model_final.pth"),
            "--input",
            os.path.join(custom_data["images"], "val2017"),
            "--max-images",
            "2",
            "--output",
            str(pred),
            *_data_overrides(
                custom_data["coco"]["train"], custom_data["coco"]["val"], custom_data["images"]
            ),
            *TINY_DATA_OVERRIDES[3:],
            "model.head.conv_dims=[64]",
        ],
        env_with_datasets,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = json.loads((pred / "predictions.json").read_text())
    names = _names(custom_data["coco"]["train"])
    assert predictions["class_names"] == names
    labels = {i["category_name"] for im in predictions["images"] for i in im["instances"]}
    assert labels and labels <= set(names)


@pytest.mark.slow
def test_lvis_format_data_trains_and_scores_with_the_federated_rules(
    tmp_path, custom_data, env_with_datasets
):
    out, final, _ = _train(
        tmp_path,
        custom_data,
        "lvis",
        env_with_datasets,
        "custom.frequency_thresholds=[20,60]",
    )
    assert "(LVIS format, 10 classes" in (out / "log.txt").read_text()
    results = json.loads((out / "inference" / "lvis_instances_results.json").read_text())
    with open(custom_data["lvis"]["val"]) as f:
        gt = json.load(f)
    # lvis-api needs the groups in the file: those of the training json at [20, 60]
    with open(custom_data["lvis"]["train"]) as f:
        train = json.load(f)
    images = {c["id"]: set() for c in train["categories"]}
    for a in train["annotations"]:
        images[a["category_id"]].add(a["image_id"])
    gt = copy.deepcopy(gt)
    for c in gt["categories"]:
        c["frequency"] = frequency_group(len(images[c["id"]]), (20, 60))
    ev = lvis_api_eval(gt, results)
    for m in ("AP", "AP50", "APr", "APc", "APf"):
        want = float(ev.results[m] * 100)
        assert final[f"bbox/{m}"] == pytest.approx(want, abs=1e-9, nan_ok=True), m
    assert math.isfinite(final["bbox/AP"])


# ----------------------------------------------------------------------------- the preflight


def _preflight(tmp_path, train, val, images, *extra, eval_only=False):
    args = argparse.Namespace(
        config_file=os.path.join(REPO, R18),
        opts=[
            *_data_overrides(train, val, images),
            f"train.output_dir={tmp_path / 'out'}",
            *extra,
        ],
        eval_only=eval_only,
        resume=False,
        eval_protocol="standard",
        allow_random_weights=eval_only,
    )
    return preflight(args)


def _refusal(tmp_path, train, val, images, *extra) -> str:
    with pytest.raises(ConfigCheckError) as e:
        _preflight(tmp_path, train, val, images, *extra)
    return str(e.value)


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_a_good_dataset_passes_and_is_registered_with_its_own_classes(tmp_path, custom_data):
    coco = custom_data["coco"]
    cfg, _ = _preflight(tmp_path, coco["train"], coco["val"], custom_data["images"])
    names = _names(coco["train"])
    assert cfg.custom.num_classes == cfg.model.num_classes == len(names) == 10
    meta = MetadataCatalog.get("custom_train")
    assert meta.thing_classes == names and meta.evaluator_type == "coco"
    train = _load(coco["train"])
    ids = sorted(c["id"] for c in train["categories"])
    assert meta.thing_dataset_id_to_contiguous_id == {c: k for k, c in enumerate(ids)}
    images = {c: set() for c in ids}
    for a in train["annotations"]:
        images[a["category_id"]].add(a["image_id"])
    assert meta.class_frequency == [frequency_group(len(images[c])) for c in ids]
    assert set(meta.class_frequency) == {"r", "c", "f"}
    annotated = len({a["image_id"] for a in train["annotations"]})
    assert cfg.dataloader.train.repeat_thresh == pytest.approx(100 / annotated)
    # the dataset dicts: contiguous ids, the boxes as given, files under the image folder
    dicts = DatasetCatalog.get("custom_train")
    assert len(dicts) == len(train["images"])
    by_id = {a["id"]: a for a in train["annotations"]}
    first = next(d for d in dicts if d["annotations"])
    image = next(i for i in train["images"] if i["id"] == first["image_id"])
    assert first["file_name"] == os.path.join(custom_data["images"], image["file_name"])
    ann = [a for a in by_id.values() if a["image_id"] == first["image_id"]]
    assert [a["bbox"] for a in first["annotations"]] == [a["bbox"] for a in ann]
    assert [d["category_id"] for d in first["annotations"]] == [
        ids.index(a["category_id"]) for a in ann
    ]


def test_frequency_thresholds_and_the_class_count_come_from_the_command_line_or_the_json(
    tmp_path, custom_data
):
    coco = custom_data["coco"]
    _preflight(
        tmp_path,
        coco["train"],
        coco["val"],
        custom_data["images"],
        "custom.frequency_thresholds=[0,1]",
    )
    assert "r" not in MetadataCatalog.get("custom_val").class_frequency  # every class in >1 image
    text = _refusal(
        tmp_path, coco["train"], coco["val"], custom_data["images"], "model.num_classes=42"
    )
    assert "model.num_classes=42" in text and "has 10 categories" in text
    text = _refusal(
        tmp_path,
        coco["train"],
        coco["val"],
        custom_data["images"],
        "custom.frequency_thresholds=[100,10]",
    )
    assert "custom.frequency_thresholds" in text and "rare max < common max" in text


def _broken(tmp_path, custom_data, edit, fmt="coco", split="train"):
    """The ``fmt`` data with ``edit(json)`` applied to the ``split`` file; returns (train, val)."""
    files = dict(custom_data[fmt])
    data = _load(files[split])
    edit(data)
    files[split] = _write(tmp_path / f"broken_{split}.json", data)
    return files["train"], files["val"]


def _first_annotation(data, key, value):
    data["annotations"][0][key] = value


BAD_RECORDS = {
    "unknown category": (
        lambda d: _first_annotation(d, "category_id", 999),
        ["category id that is not in 'categories'", "category_id 999"],
    ),
    "negative height": (
        lambda d: _first_annotation(d, "bbox", [10, 40, 30, -20]),
        ["negative or zero width or height", "[10, 40, 30, -20]", "not turned into a box"],
    ),
    "zero width": (
        lambda d: _first_annotation(d, "bbox", [10, 40, 0, 20]),
        ["negative or zero width or height"],
    ),
    "NaN box": (
        lambda d: _first_annotation(d, "bbox", [10, float("nan"), 5, 5]),
        ["NaN or infinite"],
    ),
    "outside the image": (
        lambda d: _first_annotation(d, "bbox", [5000, 10, 5, 5]),
        ["entirely outside their image"],
    ),
    "duplicate image ids": (
        lambda d: d["images"].append(dict(d["images"][0])),
        ["image ids are used more than once", "needs its own id"],
    ),
    "duplicate category ids": (
        lambda d: d["categories"].append({"id": d["categories"][0]["id"], "name": "other"}),
        ["category ids are used more than once"],
    ),
    "unknown image": (
        lambda d: _first_annotation(d, "image_id", 123456789),
        ["image id that is not in 'images'", "Add the image or remove its annotations"],
    ),
    "no iscrowd": (
        lambda d: d["annotations"][0].pop("iscrowd"),
        ["'iscrowd'", "pycocotools"],
    ),
    "no area": (lambda d: d["annotations"][0].pop("area"), ["'area'", "width * height"]),
    "missing image file": (
        lambda d: d["images"][0].update(file_name="train2017/nowhere.jpg"),
        ["images that cannot be used", "nowhere.jpg"],
    ),
    "empty split": (
        lambda d: d.update(images=[], annotations=[]),
        ["no images: the split is empty"],
    ),
    "mixed formats": (
        lambda d: d["images"][0].update(neg_category_ids=[], not_exhaustive_category_ids=[]),
        ["1 of", "give them to every image"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_bad_training_file_is_refused_naming_the_file_the_record_and_the_fix(
    tmp_path, custom_data, case
):
    edit, expected = BAD_RECORDS[case]
    train, val = _broken(tmp_path, custom_data, edit)
    text = _refusal(tmp_path, train, val, custom_data["images"])
    assert train in text, text
    for part in expected:
        assert part in text, (part, text)


def test_every_problem_of_both_files_is_in_one_message(tmp_path, custom_data):
    def two_problems(d):
        d["annotations"][0]["bbox"] = [10, 40, 30, -20]
        d["annotations"][1]["category_id"] = 999

    train, _ = _broken(tmp_path, custom_data, two_problems)
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    _, val = _broken(val_dir, custom_data, lambda d: d["categories"].pop(), split="val")
    text = _refusal(tmp_path, train, val, custom_data["images"], "custom.val_images=/nowhere")
    assert "negative or zero width" in text and "category_id 999" in text
    assert "custom.val_images='/nowhere': no such folder" in text
    assert "its categories are not those of" in text and "ids only in the training json" in text
    assert text.startswith("5 problem(s)"), text  # and the val file's own annotations of 73


def test_unset_and_missing_files_say_what_to_give(tmp_path, custom_data):
    text = _refusal(tmp_path, custom_data["coco"]["train"], "", custom_data["images"])
    assert "custom.val_json is not set" in text and "custom.val_images=" in text
    text = _refusal(tmp_path, str(tmp_path / "nope.json"), "", custom_data["images"])
    assert "nope.json: no such file" in text
    (tmp_path / "bad.json").write_text('{"images": [}')
    text = _refusal(tmp_path, str(tmp_path / "bad.json"), "", custom_data["images"])
    assert "not valid JSON at line 1" in text


def test_boxes_partly_outside_their_image_are_clipped_and_counted(tmp_path, custom_data, caplog):
    def spill(d):
        image = d["images"][0]
        a = next(a for a in d["annotations"] if a["image_id"] == image["id"])
        a["bbox"] = [image["width"] - 5, 2, 20, 10]

    train, val = _broken(tmp_path, custom_data, spill)
    with caplog.at_level("WARNING", logger="efl_d2.data.custom"):
        _preflight(tmp_path, train, val, custom_data["images"])
    assert "1 boxes reach past their image; they are clipped" in caplog.text


@pytest.mark.slow
def test_train_net_refuses_bad_data_with_exit_2_before_writing_anything(
    tmp_path, custom_data, env_with_datasets
):
    train, val = _broken(tmp_path, custom_data, BAD_RECORDS["negative height"][0])
    out = tmp_path / "refused"
    proc = run_train_net(
        [
            "--config-file",
            R18,
            *_data_overrides(train, val, custom_data["images"]),
            f"train.output_dir={out}",
            "custom.train_jsn=typo.json",
        ],
        env_with_datasets,
    )
    assert proc.returncode == 2 and "did you mean custom.train_json" in proc.stderr
    proc = run_train_net(
        [
            "--config-file",
            R18,
            *_data_overrides(train, val, custom_data["images"]),
            f"train.output_dir={out}",
        ],
        env_with_datasets,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("error:") == 1 and "[10, 40, 30, -20]" in proc.stderr
    assert "Starting training" not in proc.stdout + proc.stderr
    assert not out.exists() or os.listdir(out) == [], os.listdir(out)


def test_fig2_on_custom_data_counts_what_it_counts_on_the_same_data_as_mini_lvis(
    tmp_path, custom_data, mini_lvis_root
):
    from _tiny_zoo import run_tool

    fig2 = run_tool("plot_fig2_pos_neg_ratio")
    coco = custom_data["coco"]
    args = ["--max-images", "12", "--output", str(tmp_path / "fig2.png")]
    custom, _ = fig2.main(
        [
            "--config-file",
            R18,
            *args,
            *_data_overrides(coco["train"], coco["val"], custom_data["images"]),
        ]
    )
    # the same images and boxes as mini-LVIS (its ids 7k + 3 keep the class order)
    mini, _ = fig2.main(
        ["--config-file", "configs/mini_lvis/atss_efl_R18.py", *args, "model.num_classes=10"]
    )
    assert custom.positives.sum() > 0
    assert custom.positives.tolist() == mini.positives.tolist()
    assert custom.negatives.tolist() == mini.negatives.tolist()
    assert custom.class_names == _names(coco["train"])
    assert custom.frequency == MetadataCatalog.get("custom_train").class_frequency
    assert custom.frequency == MetadataCatalog.get("mini_lvis_v1_train").class_frequency


def test_own_datasets_registered_with_detectron2_are_pointed_to_the_custom_configs(
    tmp_path, custom_data
):
    """Detectron2's own registration gives no class names until the data is loaded, and a COCO
    dataset under an LVIS evaluator would fail after training: both are refused up front."""
    from detectron2.data.datasets import register_coco_instances

    for split in ("train", "val"):
        name = f"my_coco_{split}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, custom_data["coco"][split], custom_data["images"])
    args = argparse.Namespace(
        config_file=os.path.join(REPO, "configs/mini_lvis/atss_efl_R18.py"),
        opts=[
            "dataloader.train.dataset.names=my_coco_train",
            "dataloader.test.dataset.names=my_coco_val",
            f"train.output_dir={tmp_path / 'out'}",
        ],
        eval_only=False,
        resume=False,
        eval_protocol="standard",
        allow_random_weights=False,
    )
    with pytest.raises(ConfigCheckError) as e:
        preflight(args)
    text = str(e.value)
    assert "dataset 'my_coco_train' has no class names" in text
    assert "dataset 'my_coco_val' is 'coco' data, which it cannot score" in text
    assert "configs/custom/atss_efl_R18.py" in text and "custom.train_json=" in text


def test_the_paper_recipe_config_takes_the_same_data(tmp_path, custom_data):
    from detectron2.config import instantiate

    from efl_d2.evaluation import COCOEvaluator, LVISEvaluator

    for fmt, evaluator in (("coco", COCOEvaluator), ("lvis", LVISEvaluator)):
        args = argparse.Namespace(
            config_file=os.path.join(REPO, "configs/custom/atss_efl_R50.py"),
            opts=[
                *_data_overrides(
                    custom_data[fmt]["train"], custom_data[fmt]["val"], custom_data["images"]
                ),
                f"train.output_dir={tmp_path / fmt}",
                "train.init_checkpoint=",
            ],
            eval_only=False,
            resume=False,
            eval_protocol="standard",
            allow_random_weights=False,
        )
        cfg, _ = preflight(args)
        model = instantiate(cfg.model)
        assert model.num_classes == model.cls_loss.num_classes == 10
        assert cfg.dataloader.train.total_batch_size == 16  # the paper's recipe, not the CPU one
        ev = instantiate(cfg.dataloader.evaluator)
        assert type(ev) is evaluator and ev._output_dir == str(tmp_path / fmt / "inference")
