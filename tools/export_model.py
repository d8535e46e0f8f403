#!/usr/bin/env python
"""Export a trained ATSS model to ONNX or TorchScript, for any input size.

    python tools/export_model.py --config-file mini_lvis/atss_efl_R18.py \
        --checkpoint output/mini_lvis_demo/model_final.pth --format onnx --output atss.onnx

``--config-file`` is a path relative to efl_d2's ``configs/`` (model-zoo style) or a config file;
``--checkpoint`` any file ``EFLCheckpointer`` reads. Trailing ``key=value`` arguments override
config values (an unknown key is an error). The file takes one (3, h, w) float32 image, already
resized to the config's test size, in the model's input format, with any h and w (batch of one);
it returns boxes (N, 4) in the pixels of that image, scores (N,) and classes (N,) int64. It
records the class names, the test-time resize and the input format (``efl_d2.export``;
``docs/export.md``). ONNX: opset 17, needs the ``export`` extra (``pip install -e ".[export]"``).
Only ATSS exports so far.

Errors are an ``error:`` line on stderr and exit status 2: a ``--checkpoint`` that is missing or
not a checkpoint, an unknown config or override, weights that do not fit the model, a model or
test-time resize that cannot be exported.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


def _fail(message: str) -> NoReturn:
    """``error: <message>`` on stderr, exit status 2 (the SystemExit's text is the line too)."""
    print(f"error: {message}", file=sys.stderr)
    exit_ = SystemExit(f"error: {message}")
    exit_.code = 2
    raise exit_


def main(argv: list | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="model-zoo config path or file")
    parser.add_argument("--checkpoint", required=True, help="checkpoint path or URL")
    parser.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    parser.add_argument("--output", required=True, help="file to write")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    # efl_d2 first: its warning filters then cover detectron2's imports
    from efl_d2 import model_zoo
    from efl_d2.checkpoint import (
        CheckpointMismatchError,
        CheckpointReadError,
        check_checkpoint_file,
    )
    from efl_d2.engine import ConfigCheckError, prepare_config
    from efl_d2.export import ExportMetadata, export_model

    try:
        check_checkpoint_file(args.checkpoint)
        model_zoo.get_config_file(args.config_file)
    except (CheckpointReadError, RuntimeError) as e:
        _fail(str(e))
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            _fail('--format onnx needs the onnx package: pip install -e ".[export]"')
    try:
        cfg = prepare_config(model_zoo.get_config(args.config_file), args.opts)
    except ConfigCheckError as e:
        _fail(str(e))
    try:
        model = model_zoo.build_model(cfg, weights=args.checkpoint, device="cpu", strict=True)
    except (CheckpointReadError, CheckpointMismatchError) as e:
        _fail(str(e))
    try:
        class_names = model_zoo.metadata_from_config(cfg).thing_classes
        metadata = ExportMetadata.from_predictor(model_zoo.LazyPredictor(cfg, model), class_names)
        export_model(model, metadata, args.output, args.format)
    except ValueError as e:  # no class names, a resize or a model that does not export
        _fail(str(e))
    print(
        f"wrote {args.output}: {metadata.meta_architecture} as {args.format}, "
        f"{len(metadata.class_names)} classes, test size short edge {metadata.test_short_edge} "
        f"(max {metadata.test_max_size}), input {metadata.input_format}"
    )
    return args.output


if __name__ == "__main__":
    main(sys.argv[1:])
