#!/usr/bin/env python
"""Convert torchvision ResNet ImageNet weights to a detectron2 checkpoint.

    python tools/convert_torchvision_to_d2.py resnet50-0676ba61.pth R-50-torchvision.pkl

``.pkl`` output is detectron2's model-zoo format (numpy arrays, ``matching_heuristics``), loadable
by any ``DetectionCheckpointer``; ``.pth`` output holds tensors only (``torch.load`` with
``weights_only=True`` reads it). efl_d2's ``EFLCheckpointer`` also reads the torchvision file
directly (``train.init_checkpoint=resnet50-0676ba61.pth``), so converting is optional.

Models using these weights need torchvision's pre-processing: RGB input, pixel mean
[123.675, 116.28, 103.53], std [58.395, 57.12, 57.375], and ``stride_in_1x1=False``.
"""

from __future__ import annotations

import argparse
import pickle
import sys

import torch

from efl_d2.checkpoint.torchvision import convert_torchvision_to_d2


def main(argv: list | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="torchvision ResNet state dict (.pth)")
    parser.add_argument("output", help="output file: .pkl (detectron2 model zoo) or .pth")
    parser.add_argument(
        "--prefix",
        default="",
        help="prepend to every name (e.g. 'backbone.bottom_up.'); default none: matched by "
        "detectron2's name heuristics on load",
    )
    args = parser.parse_args(argv)

    obj = torch.load(args.input, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    as_numpy = args.output.endswith(".pkl")
    converted = convert_torchvision_to_d2(state, args.prefix, as_numpy=as_numpy)
    data = {"model": converted, "__author__": "torchvision", "matching_heuristics": not args.prefix}
    if as_numpy:
        with open(args.output, "wb") as f:
            pickle.dump(data, f)
    elif args.output.endswith(".pth"):
        torch.save(data, args.output)
    else:
        parser.error("output must end with .pkl or .pth")
    print(f"wrote {args.output}: {len(converted)} tensors (classifier and BN counters dropped)")
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
