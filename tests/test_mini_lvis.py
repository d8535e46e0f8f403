"""mini-LVIS generator: LVIS v1 format, long-tailed counts, federated labels, determinism, atomicity."""

import collections
import json
import os

import numpy as np
import pytest

from efl_d2.categories import frequency_group
from efl_d2.data import mini_lvis
from efl_d2.data.mini_lvis import (
    ensure_mini_lvis,
    generate_mini_lvis,
    is_complete,
    load_meta,
    mini_lvis_paths,
    sibling_pairs,
    unannotated_instances,
)

SHIFTS = [(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)]

# Small but rule-abiding: every category in >= 5 val images, hidden instances, neg lists.
SMALL = {
    "num_train_images": 60,
    "num_val_images": 24,
    "num_categories": 10,
    "image_size": (112, 144),
    "not_exhaustive_fraction": 0.3,
}


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _load(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    """One build with the default sizes (a few seconds)."""
    return generate_mini_lvis(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    return generate_mini_lvis(tmp_path_factory.mktemp("small"), seed=3, **SMALL)


def _images_per_category(anns):
    imgs = collections.defaultdict(set)
    for a in anns:
        imgs[a["category_id"]].add(a["image_id"])
    return imgs


# ------------------------------------------------------------------------------------- format


@pytest.mark.parametrize("build", ["default_build", "small_build"])
@pytest.mark.slow
def test_lvis_api_loads_exact_v1_format(build, request):
    from lvis import LVIS

    paths = request.getfixturevalue(build)
    assert paths.image_root.endswith(os.sep)
    assert paths.json_train == os.path.join(paths.root, "lvis", "mini_lvis_v1_train.json")
    assert paths.json_val == os.path.join(paths.root, "lvis", "mini_lvis_v1_val.json")
    ds = {s: LVIS(paths.json(s)) for s in ("train", "val")}
    for split, api in ds.items():
        d = api.dataset
        assert set(d) == {"info", "licenses", "images", "annotations", "categories"}
        license_ids = {lic["id"] for lic in d["licenses"]}
        for im in d["images"]:
            assert set(im) == {
                "id", "license", "height", "width", "coco_url", "flickr_url", "date_captured",
                "neg_category_ids", "not_exhaustive_category_ids",
            }  # fmt: skip
            assert im["license"] in license_ids
            folder, name = im["coco_url"].split("/")[-2:]
            assert im["coco_url"] == f"http://images.cocodataset.org/{folder}/{name}"
            assert folder == f"{split}2017" and name == f"{im['id']:012d}.jpg"
            assert os.path.isfile(os.path.join(paths.image_root + folder, name))
        for a in d["annotations"]:
            assert set(a) == {"id", "image_id", "category_id", "bbox", "area", "segmentation"}
        cats = d["categories"]
        assert [c["id"] for c in cats] == list(range(1, len(cats) + 1))
        for c in cats:
            assert set(c) == {
                "id", "name", "synset", "synonyms", "def", "frequency", "image_count",
                "instance_count",
            }  # fmt: skip
            assert c["synonyms"][0] == c["name"] and c["frequency"] in "rcf"
            assert c["synset"] and c["def"]
        assert len({c["name"] for c in cats}) == len(cats)
    # Both splits carry the same (train-derived) category list; ids unique across splits.
    assert ds["train"].dataset["categories"] == ds["val"].dataset["categories"]
    assert not set(ds["train"].imgs) & set(ds["val"].imgs)
    assert not set(ds["train"].anns) & set(ds["val"].anns)


def test_category_counts_and_frequency_follow_train_annotations(default_build):
    train, val = _load(default_build.json_train), _load(default_build.json_val)
    imgs = _images_per_category(train["annotations"])
    insts = collections.Counter(a["category_id"] for a in train["annotations"])
    for c in train["categories"]:
        n = len(imgs[c["id"]])
        assert c["image_count"] == n >= 1
        assert c["instance_count"] == insts[c["id"]]
        want = "r" if n <= 10 else "c" if n <= 100 else "f"
        assert c["frequency"] == want == frequency_group(n), c
    groups = collections.Counter(c["frequency"] for c in train["categories"])
    assert groups["r"] >= 5 and groups["c"] >= 5 and groups["f"] >= 5, groups
    # Long-tailed, Zipf-like: sorted counts fall monotonically over > 2 orders of magnitude.
    counts = sorted((c["image_count"] for c in train["categories"]), reverse=True)
    assert counts[0] / counts[-1] >= 100
    assert counts[len(counts) // 2] <= counts[0] / 10  # the median category is 10x rarer
    assert val["categories"] == train["categories"]


@pytest.mark.parametrize("build", ["default_build", "small_build"])
def test_every_category_in_at_least_five_val_images(build, request):
    val = _load(request.getfixturevalue(build).json_val)
    imgs = _images_per_category(val["annotations"])
    for c in val["categories"]:
        assert len(imgs[c["id"]]) >= 5, c["name"]


def test_fine_grained_rare_siblings_of_frequent_categories(default_build):
    meta = load_meta(default_build)
    cats = {c["id"]: c for c in _load(default_build.json_train)["categories"]}
    specs = {c["id"]: c for c in meta["categories"]}
    pairs = sibling_pairs(meta)
    assert len(pairs) >= 3
    for sib, parent in pairs:
        s, p = specs[sib], specs[parent]
        assert (s["shape"], s["colour"]) == (p["shape"], p["colour"])
        assert s["texture"] != p["texture"]
        assert cats[sib]["frequency"] == "r" and cats[parent]["frequency"] == "f"
        assert cats[parent]["name"] in cats[sib]["def"]
    # Appearances are unique: no two categories share shape, colour and texture.
    looks = [(c["shape"], c["colour"], c["texture"]) for c in meta["categories"]]
    assert len(set(looks)) == len(looks)


# ------------------------------------------------------------------------- federated labels


@pytest.mark.parametrize("build", ["default_build", "small_build"])
def test_neg_and_not_exhaustive_lists_are_real(build, request):
    paths = request.getfixturevalue(build)
    meta = load_meta(paths)
    n_hidden = 0
    for split in ("train", "val"):
        d = _load(paths.json(split))
        annotated = collections.defaultdict(set)
        for a in d["annotations"]:
            annotated[a["image_id"]].add(a["category_id"])
        hidden = collections.defaultdict(set)
        for h in unannotated_instances(meta, split):
            hidden[h["image_id"]].add(h["category_id"])
        n_hidden += len(unannotated_instances(meta, split))
        negs = 0
        for im in d["images"]:
            drawn = annotated[im["id"]] | hidden[im["id"]]
            neg, nel = set(im["neg_category_ids"]), set(im["not_exhaustive_category_ids"])
            assert im["neg_category_ids"] == sorted(neg)
            assert not neg & drawn, "a verified-negative category is drawn in the image"
            # not-exhaustive categories: annotated there AND have a drawn, unannotated instance
            assert nel == hidden[im["id"]]
            assert nel <= annotated[im["id"]]
            negs += len(neg)
        assert negs > 0
        if split == "val":
            assert sum(bool(im["not_exhaustive_category_ids"]) for im in d["images"]) >= 3
    assert n_hidden > 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on numpy 2
def test_annotations_match_the_pixels(small_build):
    """Polygons, boxes and areas agree with each other and with what is drawn in the image,
    for annotated and for deliberately unannotated instances alike."""
    import pycocotools.mask as mask_utils
    from PIL import Image

    meta = load_meta(small_build)
    spec = {c["id"]: c for c in meta["categories"]}
    agree = {"annotated": [], "unannotated": []}
    for split in ("train", "val"):
        d = _load(small_build.json(split))
        ims = {im["id"]: im for im in d["images"]}
        pixels = {}
        for kind, anns in (("annotated", d["annotations"]),
                           ("unannotated", unannotated_instances(meta, split))):  # fmt: skip
            for a in anns:
                im = ims[a["image_id"]]
                h, w = im["height"], im["width"]
                x, y, bw, bh = a["bbox"]
                assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and bw > 0 and bh > 0
                (poly,) = a["segmentation"]
                assert len(poly) >= 6 and len(poly) % 2 == 0
                assert a["category_id"] in spec
                xy = np.asarray(poly).reshape(-1, 2)
                assert np.allclose(xy.min(0), [x, y], atol=0.02)
                assert np.allclose(xy.max(0), [x + bw, y + bh], atol=0.02)
                shoelace = abs(np.dot(xy[:, 0], np.roll(xy[:, 1], -1))
                               - np.dot(xy[:, 1], np.roll(xy[:, 0], -1))) / 2  # fmt: skip
                assert a["area"] == pytest.approx(shoelace, rel=1e-3, abs=0.05)
                rle = mask_utils.frPyObjects(a["segmentation"], h, w)
                assert mask_utils.area(rle)[0] == pytest.approx(a["area"], rel=0.15, abs=8)
                if a["area"] < 300:  # too small for colour checks after JPEG chroma subsampling
                    continue
                if im["id"] not in pixels:
                    folder, name = im["coco_url"].split("/")[-2:]
                    img = Image.open(os.path.join(small_build.image_root + folder, name))
                    pixels[im["id"]] = np.asarray(img.convert("RGB"), np.float32)
                mask = mask_utils.decode(rle)[..., 0].astype(bool)
                c = spec[a["category_id"]]
                refs = np.array([c["rgb"], c["secondary_rgb"], np.array(c["rgb"]) * 0.55])
                # Fraction of the outline's pixels in the category's colours, for the outline
                # where annotated and shifted by 2 px (the annotation must fit best unshifted).
                frac = []
                for dy, dx in SHIFTS:
                    inside = pixels[im["id"]][np.roll(mask, (dy, dx), axis=(0, 1))]
                    dist = np.linalg.norm(inside[:, None, :] - refs[None], axis=-1).min(1)
                    frac.append(float(np.mean(dist < 70)))
                agree[kind].append(frac)
    # Objects keep >= 70 % of their area visible: most pixels in each outline have the
    # category's colours (base, texture or outline colour).
    assert len(agree["annotated"]) >= 20 and len(agree["unannotated"]) >= 1
    for kind, values in agree.items():
        values = np.array(values)
        assert values[:, 0].min() > 0.5, (kind, np.sort(values[:, 0])[:5])
        assert (values[:, 0].mean() > values[:, 1:].mean(0) + 0.02).all(), (kind, values.mean(0))
    assert np.median(np.array(agree["annotated"])[:, 0]) > 0.85


# ------------------------------------------------------------------------ detectron2 loader


def test_detectron2_lvis_loader_reads_records_and_images(small_build):
    from detectron2.data.datasets.lvis import load_lvis_json
    from detectron2.data.detection_utils import read_image

    for split in ("train", "val"):
        dicts = load_lvis_json(small_build.json(split), small_build.image_root)
        d = _load(small_build.json(split))
        assert len(dicts) == len(d["images"])
        assert sum(len(r["annotations"]) for r in dicts) == len(d["annotations"])
        for r in dicts:
            assert os.path.isfile(r["file_name"]), r["file_name"]
            assert os.path.dirname(r["file_name"]).endswith(f"{split}2017")
            img = read_image(r["file_name"], format="BGR")
            assert img.shape == (r["height"], r["width"], 3)
            for a in r["annotations"]:
                assert 0 <= a["category_id"] < len(d["categories"])


@pytest.mark.filterwarnings("ignore:The .warn. method is deprecated")
def test_federated_evaluation_ignores_hidden_instances_and_punishes_negatives(small_build):
    """Ground truth as detections gives AP 1; detecting the unannotated (not-exhaustive)
    instances changes nothing; a confident detection of a verified-absent category costs AP."""
    from lvis import LVIS, LVISEval, LVISResults

    import efl_d2  # noqa: F401  (makes the LVIS API work on numpy 2)

    gt = LVIS(small_build.json_val)
    meta = load_meta(small_build)

    def ap(dets):
        dets = [dict(d, id=i + 1) for i, d in enumerate(dets)]
        ev = LVISEval(gt, LVISResults(gt, dets, max_dets=300), iou_type="bbox")
        ev.run()
        return ev.get_results()

    exact = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 0.9,
        }
        for a in gt.dataset["annotations"]
    ]
    assert ap(exact)["AP"] == pytest.approx(1.0)
    hidden = [
        {
            "image_id": h["image_id"],
            "category_id": h["category_id"],
            "bbox": h["bbox"],
            "score": 1.0,
        }
        for h in unannotated_instances(meta, "val")
    ]
    assert hidden
    assert ap(exact + hidden)["AP"] == pytest.approx(1.0)
    neg_img = next(im for im in gt.dataset["images"] if im["neg_category_ids"])
    false_pos = [
        {"image_id": neg_img["id"], "category_id": neg_img["neg_category_ids"][0],
         "bbox": [1.0, 1.0, 20.0, 20.0], "score": 1.0}
    ]  # fmt: skip
    assert ap(exact + false_pos)["AP"] < 1.0


# --------------------------------------------------------------------- determinism, atomicity


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    a = generate_mini_lvis(tmp_path / "a", seed=7, **SMALL)
    b = generate_mini_lvis(tmp_path / "b", seed=7, **SMALL)
    c = generate_mini_lvis(tmp_path / "c", seed=8, **SMALL)
    for split in ("train", "val"):
        assert _read(a.json(split)) == _read(b.json(split))
        assert _read(a.json(split)) != _read(c.json(split))
        names = sorted(os.listdir(a.image_dir(split)))
        assert names == sorted(os.listdir(b.image_dir(split)))
        assert all(
            _read(os.path.join(a.image_dir(split), n)) == _read(os.path.join(b.image_dir(split), n))
            for n in names
        )
        assert any(
            _read(os.path.join(a.image_dir(split), n)) != _read(os.path.join(c.image_dir(split), n))
            for n in names
        )
    assert _read(a.meta) == _read(b.meta)
    # Category appearances do not depend on the seed (studies can compare seeds per category).
    assert (
        _load(a.json_train)["categories"][0]["name"] == _load(c.json_train)["categories"][0]["name"]
    )


def test_interrupted_build_leaves_no_dataset_and_keeps_an_old_one(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    real = mini_lvis.build.render_image
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 30:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the build
        return real(*args, **kwargs)

    monkeypatch.setattr(mini_lvis.build, "render_image", dying)
    with pytest.raises(KeyboardInterrupt):
        generate_mini_lvis(root, **SMALL)
    paths = mini_lvis_paths(root)
    assert not os.path.exists(paths.json_train) and not os.path.exists(paths.json_val)
    assert not is_complete(root)
    assert not [n for n in os.listdir(root) if n.startswith(".mini_lvis_build_")]

    monkeypatch.setattr(mini_lvis.build, "render_image", real)
    generate_mini_lvis(root, **SMALL)
    assert is_complete(root)
    before = {s: _read(paths.json(s)) for s in ("train", "val")}

    # A failed rebuild (other seed) leaves the complete old dataset as it was.
    calls["n"] = 0
    monkeypatch.setattr(mini_lvis.build, "render_image", dying)
    with pytest.raises(KeyboardInterrupt):
        generate_mini_lvis(root, seed=1, **SMALL)
    assert is_complete(root)
    assert {s: _read(paths.json(s)) for s in ("train", "val")} == before

    # A staging folder left by a killed process is cleaned up by the next build.
    os.makedirs(root / ".mini_lvis_build_killed" / "train2017")
    monkeypatch.setattr(mini_lvis.build, "render_image", real)
    generate_mini_lvis(root, seed=1, **SMALL)
    assert not (root / ".mini_lvis_build_killed").exists()


def test_ensure_reuses_an_identical_build_and_rebuilds_otherwise(tmp_path):
    paths = ensure_mini_lvis(tmp_path, **SMALL)
    stamp = os.stat(paths.json_val).st_mtime_ns
    msgs = []
    assert ensure_mini_lvis(tmp_path, progress=msgs.append, **SMALL) == paths
    assert os.stat(paths.json_val).st_mtime_ns == stamp
    assert any("up to date" in m for m in msgs)
    ensure_mini_lvis(tmp_path, **dict(SMALL, num_val_images=20))
    assert len(_load(paths.json_val)["images"]) == 20
    assert load_meta(paths)["params"]["num_val_images"] == 20


def test_bad_sizes_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="min_val_images_per_category"):
        generate_mini_lvis(tmp_path, num_val_images=3)
    with pytest.raises(ValueError, match="max_images_per_category"):
        generate_mini_lvis(tmp_path, num_train_images=10, max_images_per_category=50)
    with pytest.raises(ValueError, match="objects_per_image"):
        generate_mini_lvis(tmp_path, num_train_images=10, num_categories=30,
                           objects_per_image=(1, 2))  # fmt: skip
    assert not os.path.exists(mini_lvis_paths(tmp_path).json_train)


def test_cli_builds_with_progress(tmp_path, capsys):
    rc = mini_lvis.main(
        ["--root", str(tmp_path), "--seed", "2", "--num-train-images", "30",
         "--num-val-images", "10", "--num-categories", "6", "--image-size", "80", "96"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "train: 30/30 images" in out and "val: 10/10 images" in out
    paths = mini_lvis_paths(tmp_path)
    assert paths.json_train in out and is_complete(tmp_path)
    assert len(_load(paths.json_train)["images"]) == 30
    assert load_meta(paths)["params"]["seed"] == 2
    assert mini_lvis.main(["--root", str(tmp_path), "--num-val-images", "2"]) == 2
