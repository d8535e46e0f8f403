#!/usr/bin/env python
"""Convert torchvision ResNet ImageNet weights to a detectron2 checkpoint.

    python tools/convert_torchvision_to_d2.py resnet50-0676ba61.pth R-50-torchvision.pkl

``.pkl`` output is detectron2's model-zoo format (numpy arrays, ``matching_heuristics``), loadable
by any ``DetectionCheckpointer``; ``.pth`` output holds tensors only (``torch.load`` with
``weights_only=True`` reads it). efl_d2's ``EFLCheckpointer`` also reads the torchvision file
directly (``train.init_checkpoint=resnet50-0676ba61.pth``), so converting is optional.

Models using these weights need torchvision's pre-processing: RGB input, pixel mean
[123.675, 116.28, 103.53], std [58.395, 57.12, 57.375], and ``stride_in_1x1=False``.

An input that is missing, a directory, unreadable, not a checkpoint or not a torchvision ResNet
is one ``error:`` line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Mapping
from typing import NoReturn

import torch

from efl_d2.checkpoint import CheckpointReadError, check_checkpoint_file, load_checkpoint_file
from efl_d2.checkpoint.torchvision import convert_torchvision_to_d2


def _fail(message: str) -> NoReturn:
    """``error: <message>`` on stderr, exit status 2 (the SystemExit's text is the line too)."""
    print(f"error: {message}", file=sys.stderr)
    exit_ = SystemExit(f"error: {message}")
    exit_.code = 2
    raise exit_


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

    if not args.output.endswith((".pkl", ".pth")):
        parser.error("output must end with .pkl or .pth")
    try:  # the checkpointer's reading: tensors only, errors naming the file
        check_checkpoint_file(args.input)
        obj = load_checkpoint_file(args.input)
    except (CheckpointReadError, RuntimeError) as e:
        _fail(str(e))
    state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping):
        _fail(f"{args.input} holds no state dict (found {type(state).__name__})")
    as_numpy = args.output.endswith(".pkl")
    try:
        converted = convert_torchvision_to_d2(state, args.prefix, as_numpy=as_numpy)
    except KeyError as e:
        _fail(f"{args.input}: {e.args[0] if e.args else e}; pass a torchvision ResNet state dict")
    data = {"model": converted, "__author__": "torchvision", "matching_heuristics": not args.prefix}
    if as_numpy:
        with open(args.output, "wb") as f:
            pickle.dump(data, f)
    else:
        torch.save(data, args.output)
    print(f"wrote {args.output}: {len(converted)} tensors (classifier and BN counters dropped)")
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
