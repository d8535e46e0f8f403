#!/usr/bin/env python
"""Convert an official EFL checkpoint (ModelTC United-Perception / EOD) to efl_d2's ATSS names.

    python tools/convert_official_to_d2.py efl_improved_baseline_r50.pth efl_r50_d2.pth
    # check it against a config (builds the model with the official architecture and loads it)
    python tools/convert_official_to_d2.py efl_improved_baseline_r50.pth efl_r50_d2.pth \
        --config-file <config.py> --official-architecture

Accepts every top-level layout of the official code (``{"model": ...}``, ``{"state_dict": ...}``
or bare) with or without DDP's ``module.`` prefix. The output holds tensors only; load it with
``efl_d2.checkpoint.EFLCheckpointer`` (``train.init_checkpoint=``, ``model_zoo.get(...,
weights=...)``), which also reads the official file directly. Details (anchor order, channel
layout, box deltas, P6/P7): ``efl_d2/official/conversion.py``.

An input that is missing, a directory, unreadable, not a checkpoint or not an official one is one
``error:`` line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import torch

from efl_d2.checkpoint import (
    CheckpointReadError,
    EFLCheckpointer,
    atomic_write,
    check_checkpoint_file,
    load_checkpoint_file,
)
from efl_d2.checkpoint.formats import OFFICIAL_AUTHOR
from efl_d2.official import check_official_architecture, convert_official_to_d2


def _fail(message: str) -> NoReturn:
    """``error: <message>`` on stderr, exit status 2 (the SystemExit's text is the line too)."""
    print(f"error: {message}", file=sys.stderr)
    exit_ = SystemExit(f"error: {message}")
    exit_.code = 2
    raise exit_


def main(argv: list | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="official .pth")
    parser.add_argument("output", help="output .pth (tensors only)")
    parser.add_argument("--config-file", help="LazyConfig to load the result into, as a check")
    parser.add_argument(
        "--official-architecture",
        action="store_true",
        help="with --config-file: switch the model to the official architecture first",
    )
    parser.add_argument(
        "--cls-layout",
        choices=("anchor_major", "class_major"),
        default="anchor_major",
        help="class-logit channel layout of the file: anchor_major (paper-era code, default) or "
        "class_major (used with the later class_first post-process)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read a file holding non-tensor Python objects (torch.load weights_only=False); "
        "only for files from a source you trust",
    )
    args = parser.parse_args(argv)

    try:  # the checkpointer's reading: tensors only unless trusted, errors naming the file
        check_checkpoint_file(args.input)
        obj = load_checkpoint_file(args.input, allow_unsafe_pickle=args.trust_pickle)
    except CheckpointReadError as e:
        _fail(str(e))
    except (RuntimeError, OSError) as e:  # Python objects other than tensors
        hint = "" if args.trust_pickle else " If you trust its source, rerun with --trust-pickle."
        _fail(f"cannot read {args.input}: {e}{hint}")
    try:
        state, info = convert_official_to_d2(obj, cls_layout=args.cls_layout)
    except (KeyError, ValueError, TypeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        _fail(f"{args.input}: {msg}; pass an official EFL release checkpoint")
    data = {
        "model": state,
        "__author__": OFFICIAL_AUTHOR,
        "efl_d2_source": "official",
        "efl_d2_conversion": info,
    }
    atomic_write(args.output, lambda f: torch.save(data, f))
    print(
        f"wrote {args.output}: {len(state)} tensors, {info['num_classes']} classes, "
        f"{info['num_anchors']} anchors per location, source layout {info['layout']!r}, "
        f"module. prefix {info['module_prefix']}, cls layout {info['cls_layout']}, "
        f"EFL statistics {'kept' if info['has_efl_statistics'] else 'absent'}, "
        f"{len(info['dropped'])} keys dropped (BN counters)"
    )
    if args.config_file:
        from efl_d2 import model_zoo
        from efl_d2.official import use_official_architecture

        cfg = model_zoo.get_config(args.config_file)
        if args.official_architecture:
            use_official_architecture(cfg)
        model = model_zoo.build_model(cfg, device="cpu")
        EFLCheckpointer(model, strict=True).load(args.output)
        problems = check_official_architecture(model)
        print(f"loaded into {args.config_file}: all keys and shapes match")
        for p in problems:
            print(f"  architecture difference: {p}")
        data["architecture_differences"] = problems
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
