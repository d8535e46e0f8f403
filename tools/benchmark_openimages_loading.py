#!/usr/bin/env python
"""Time and memory of reading OpenImages-size box files (efl_d2.data.openimages).

Writes a synthetic ``challenge-2019-train-detection-bbox.csv`` (the release's 13 columns) of
``--images`` images with ``--boxes-per-image`` boxes on average (defaults: the Challenge 2019
train split, 1,743,042 images and 12.2M boxes) and 500 classes under a 3-level hierarchy, then
measures in this process, each step after the previous one:

1. ``read_boxes``: the CSV into columns (the baseline row: the file's own size for reference);
2. ``expand_boxes``: the hierarchy expansion;
3. ``OpenImagesImages``, the dataset the loaders use (dicts built when read), the time to read
   its items, and for comparison the memory of a list of all the dicts (both measured on
   ``--dicts-fraction`` of the images and extrapolated).

Prints a table: seconds, peak resident memory added (MiB) and bytes per box.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def _rss_peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")


def write_files(folder: str, images: int, per_image: float, seed: int = 0) -> tuple[str, list]:
    rng = np.random.default_rng(seed)
    mids = [f"/m/c{k:03d}" for k in range(500)]
    counts = rng.poisson(per_image, size=images)
    total = int(counts.sum())
    path = os.path.join(folder, "challenge-2019-train-detection-bbox.csv")
    # long-tailed classes (Zipf-like) among the 400 leaves; the 100 parents have no own boxes
    weights = 1.0 / np.arange(1, 401) ** 1.1
    labels = rng.choice(400, size=total, p=weights / weights.sum()) + 100
    xy = rng.random((total, 4))
    x0, x1 = np.minimum(xy[:, 0], xy[:, 1]), np.maximum(xy[:, 0], xy[:, 1])
    y0, y1 = np.minimum(xy[:, 2], xy[:, 3]), np.maximum(xy[:, 2], xy[:, 3])
    group = rng.random(total) < 0.05
    image = np.repeat(np.arange(images), counts)
    with open(path, "w") as f:
        f.write(
            "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,"
            "IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        )
        chunk = 200_000
        for s in range(0, total, chunk):
            e = min(s + chunk, total)
            f.writelines(
                f"{image[i]:016x},xclick,{mids[labels[i]]},1,{x0[i]:.6f},{x1[i]:.6f},"
                f"{y0[i]:.6f},{y1[i]:.6f},0,0,{int(group[i])},0,0\n"
                for i in range(s, e)
            )
    return path, mids


def hierarchy(mids):
    """Leaves 100..499 under 80 mid-level classes 20..99 under 20 top classes 0..19."""
    from efl_d2.data.openimages import ClassHierarchy

    tops = [{"LabelName": mids[t], "Subcategory": []} for t in range(20)]
    for m in range(20, 100):
        node = {"LabelName": mids[m], "Subcategory": []}
        node["Subcategory"] = [
            {"LabelName": mids[c]} for c in range(100 + (m - 20) * 5, 105 + (m - 20) * 5)
        ]
        tops[m % 20]["Subcategory"].append(node)
    return ClassHierarchy.from_tree({"LabelName": "/m/0bl9f", "Subcategory": tops})


def _no_labels(boxes):
    from efl_d2.data.openimages import LabelTable

    empty = np.zeros(0, dtype=np.int32)
    return LabelTable(boxes.image_ids, empty, empty, np.zeros(0, dtype=bool))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1_743_042)
    p.add_argument("--boxes-per-image", type=float, default=7.0)
    p.add_argument("--dicts-fraction", type=float, default=0.1)
    p.add_argument("--dir", help="where to write the synthetic file (default: a temp folder)")
    args = p.parse_args(argv)
    from efl_d2.data.openimages import OpenImagesImages, expand_boxes, read_boxes

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        t = time.perf_counter()
        path, mids = write_files(folder, args.images, args.boxes_per_image)
        size = os.path.getsize(path)
        print(f"wrote {size / 2**20:.0f} MiB in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        rows = []
        _reset_peak()
        base = _rss_peak_mib()
        t = time.perf_counter()
        boxes = read_boxes(path, mids)
        n = len(boxes.label)
        rows.append(
            ("read_boxes (CSV -> columns)", time.perf_counter() - t, _rss_peak_mib() - base, n)
        )
        _reset_peak()
        base = _rss_peak_mib()
        t = time.perf_counter()
        ancestors, _ = hierarchy(mids).index_lists(mids)
        expanded = expand_boxes(boxes, ancestors)
        rows.append(
            (
                "expand_boxes (to ancestors)",
                time.perf_counter() - t,
                _rss_peak_mib() - base,
                len(expanded.label),
            )
        )
        _reset_peak()
        base = _rss_peak_mib()
        t = time.perf_counter()
        images = OpenImagesImages(
            boxes.image_ids, folder, expanded, _no_labels(boxes), group_of="box"
        )
        dt, mem = time.perf_counter() - t, _rss_peak_mib() - base
        rows.append(("OpenImagesImages (the dataset: sorted tables)", dt, mem, len(expanded.label)))
        f = args.dicts_fraction
        k = int(len(images) * f)
        t = time.perf_counter()
        n_anns = sum(len(images[i]["annotations"]) for i in range(k))
        rows.append(
            (
                f"  reading its items ({f:.0%}, x{1 / f:.0f})",
                (time.perf_counter() - t) / f,
                0.0,
                n_anns,
            )
        )
        _reset_peak()
        base = _rss_peak_mib()
        t = time.perf_counter()
        dicts = [images[i] for i in range(k)]
        dt, mem = time.perf_counter() - t, _rss_peak_mib() - base
        rows.append(
            (
                f"  a list of all its dicts instead ({f:.0%}, x{1 / f:.0f})",
                dt / f,
                mem / f,
                len(expanded.label),
            )
        )
        del dicts
        print(
            f"\n{len(boxes.image_ids):,} images, {n:,} boxes ({size / 2**20:.0f} MiB CSV), {len(expanded.label):,} after expansion\n"
        )
        print("| step | seconds | peak memory added (MiB) | bytes per box |")
        print("|---|---|---|---|")
        for name, sec, mib, count in rows:
            print(f"| {name} | {sec:.1f} | {mib:.0f} | {mib * 2**20 / max(count, 1):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
