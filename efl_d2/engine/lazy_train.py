"""Training and evaluation with LazyConfig files: the logic behind ``tools/train_net.py``.

It follows detectron2's ``tools/lazyconfig_train_net.py`` and adds what the paper needs: global-norm
gradient clipping (``train.clip_grad``), a seed (``train.seed``), CPU fall-back when CUDA is absent,
AMP precision from the config, strict command-line overrides and an LVIS AP summary; and what a
two-day run needs: checks of the whole config before the first step (:mod:`.preflight`), exact
resume (data indexed by iteration, metric history in the checkpoint, atomic checkpoints) and a
failed run that says so (:class:`RunFailed`, a non-zero exit of ``tools/train_net.py``).
"""

import argparse
import difflib
import inspect
import logging
import math
import os
import sys

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    hooks,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from detectron2.utils.logger import setup_logger
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

from ..checkpoint import EFLCheckpointer
from ..data import class_frequencies
from ..visualization import write_summary_picture
from .decoupled import freeze_all_but
from .efl_stats_hook import EFLStatsHook
from .hooks import GradientClipHook
from .preflight import check_run
from .resume import MetricsHistoryHook, truncate_metrics_json

__all__ = [
    "RunFailed",
    "apply_overrides_strict",
    "do_test",
    "do_train",
    "format_lvis_ap",
    "load_config",
    "main",
    "parse_args",
    "preflight",
    "set_eval_protocol",
    "setup",
]

logger = logging.getLogger("efl_d2")

_MISSING = object()


class RunFailed(RuntimeError):
    """Training or evaluation finished without a usable result; the message says why."""


def parse_args(argv: list[str] | None = None, epilog: str | None = None) -> argparse.Namespace:
    """detectron2's training arguments plus ``--allow-random-weights``; flags may also come after
    the ``key=value`` overrides (``... train.max_iter=20 --resume``)."""
    parser = default_argument_parser(epilog=epilog)
    parser.add_argument(
        "--eval-protocol",
        choices=("standard", "fixed", "pooled"),
        default="standard",
        help="LVIS box AP protocol: standard, fixed (AP-fixed) or pooled (AP-pool) of Dave et "
        "al. 2021; the last two also make the detector keep the best boxes of every class",
    )
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="let --eval-only evaluate a model without train.init_checkpoint (random weights)",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    flags, opts, i = [], [], 0
    while i < len(args.opts):  # argparse.REMAINDER swallows flags given after the first override
        token = args.opts[i]
        if token.startswith("--"):
            flags.append(token)
            nxt = args.opts[i + 1] if i + 1 < len(args.opts) else None
            if "=" not in token and nxt is not None and not nxt.startswith("-") and "=" not in nxt:
                flags.append(nxt)
                i += 1
        else:
            opts.append(token)
        i += 1
    if flags:
        leading = argv[: len(argv) - len(args.opts)]  # the overrides are argv's tail
        args = parser.parse_args(leading + flags)
        args.opts = opts
    return args


def apply_overrides_strict(cfg, overrides: list[str]):
    """``LazyConfig.apply_overrides`` that refuses keys the config does not have.

    detectron2 silently adds a mistyped key (``train.max_itr=10`` trains for the default length).
    Here it is an error naming close matches; prefix a key with ``+`` to add a new one on purpose.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if o.is_add() or OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        keys = list(node.keys()) if OmegaConf.is_dict(node) else []
        close = difflib.get_close_matches(leaf, keys, n=3)
        raise KeyError(
            f"Unknown config key {key!r} in override {o.input_line!r}."
            + (
                f" Did you mean: {', '.join((parent + '.' if parent else '') + c for c in close)}?"
                if close
                else ""
            )
            + f" Keys under {parent or '<root>'!r}: {sorted(keys)}. Use '+{key}=...' to add a key."
        )
    return LazyConfig.apply_overrides(cfg, overrides)


def _resolve_device(cfg) -> None:
    if str(cfg.train.device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA is not available: training and evaluating on CPU.")
        cfg.train.device = "cpu"
    if cfg.train.device == "cpu" and cfg.train.amp.enabled:
        logger.warning("AMP needs CUDA (detectron2's AMPTrainer): disabling AMP on CPU.")
        cfg.train.amp.enabled = False


def load_config(args):
    """The config of ``args.config_file`` (a path, or a path relative to ``configs/`` as
    :func:`efl_d2.model_zoo.get_config_file` takes) with ``args.opts`` applied strictly."""
    if not os.path.isfile(args.config_file):
        from ..model_zoo import get_config_file

        args.config_file = get_config_file(args.config_file)  # default_setup reads it too
    cfg = LazyConfig.load(args.config_file)
    set_eval_protocol(cfg, getattr(args, "eval_protocol", "standard"))  # overrides win
    return apply_overrides_strict(cfg, args.opts)


#: the inference settings ``--eval-protocol fixed|pooled`` gives a one-stage detector: the 10 best
#: anchors of every class and level before NMS, up to 10,000 boxes per image, so that every class
#: has its best detections over the dataset among those the evaluator keeps (10,000 per class)
DATASET_TOPK_INFERENCE = {"test_topk_per_class": 10, "max_detections_per_image": 10000}


def set_eval_protocol(cfg, protocol: str) -> None:
    """Switch ``cfg`` to the evaluation protocol "standard", "fixed" (AP-fixed) or "pooled"
    (AP-pool): the evaluator's ``protocol`` and, for the last two, the model's
    :data:`DATASET_TOPK_INFERENCE`. "standard" changes nothing."""
    if protocol == "standard":
        return
    ev = cfg.dataloader.get("evaluator")
    if ev is None or "protocol" not in ev:
        raise ValueError(
            f"--eval-protocol {protocol} needs efl_d2.evaluation.LVISEvaluator as "
            "dataloader.evaluator (the config's has no 'protocol')."
        )
    if "test_topk_per_class" not in cfg.model:
        raise ValueError(
            f"--eval-protocol {protocol}: the model has no test_topk_per_class (the one-stage "
            "detectors ATSS, PAA, PluggableRetinaNet and PluggableFCOS have)."
        )
    ev.protocol = protocol
    for key, value in DATASET_TOPK_INFERENCE.items():
        cfg.model[key] = value


def preflight(args) -> None:
    """All checks that need no training (:func:`efl_d2.engine.preflight.check_run`); raises
    ``ConfigCheckError`` listing every problem. ``tools/train_net.py`` runs it before launching."""
    cfg = load_config(args)
    _resolve_device(cfg)
    check_run(
        cfg,
        eval_only=args.eval_only,
        resume=args.resume,
        allow_random_weights=getattr(args, "allow_random_weights", False),
    )


def setup(args):
    """Load the config, apply overrides, fall back to CPU if needed, then ``default_setup``."""
    cfg = load_config(args)
    _resolve_device(cfg)
    default_setup(cfg, args)
    # efl_d2's own progress lines (sampling, decoupled training, ...) next to detectron2's
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="efl_d2")
    return cfg


def format_lvis_ap(results: dict) -> str:
    """Table of AP, AP50, AP75, APr, APc, APf per task of evaluator results (a task with other
    metrics, e.g. AP-pool's, gets its own header line)."""
    cols = ["AP", "AP50", "AP75", "APr", "APc", "APf"]
    tasks = {t: m for t, m in results.items() if isinstance(m, dict)}
    width = max([6, *(len(t) + 2 for t in tasks)])
    lines, header = [], None
    for task, metrics in tasks.items():
        names = cols if "AP" in metrics else list(metrics)
        if names != header:
            lines.append(
                f"{'task':<{width}}" + "".join(f"{c:>{max(8, len(c) + 2)}}" for c in names)
            )
            header = names
        lines.append(
            f"{task:<{width}}"
            + "".join(f"{metrics.get(c, float('nan')):>{max(8, len(c) + 2)}.2f}" for c in names)
        )
    return "\n".join(lines)


def do_test(cfg, model):
    """Run ``cfg.dataloader.test`` through ``cfg.dataloader.evaluator``; None without an evaluator."""
    if "evaluator" not in cfg.dataloader:
        return None
    ret = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process() and ret:
        print_csv_format(ret)
        logger.info("LVIS box AP summary:\n" + format_lvis_ap(ret))
    return ret


def _writers(output_dir: str, max_iter: int):
    writers = [CommonMetricPrinter(max_iter), JSONWriter(os.path.join(output_dir, "metrics.json"))]
    try:  # TensorBoard is optional for users who `pip install -e .` without the dev extras
        import tensorboard  # noqa: F401
        from detectron2.utils.events import TensorboardXWriter

        writers.append(TensorboardXWriter(output_dir))
    except ImportError:
        logger.warning("tensorboard is not installed: no TensorBoard event files.")
    return writers


def _create_ddp(model, cfg):
    ddp_kwargs = dict(cfg.train.ddp)
    if cfg.train.device == "cpu":
        ddp_kwargs["device_ids"] = None  # Gloo on CPU: DDP rejects device ids for CPU modules
    return create_ddp_model(model, **ddp_kwargs)


def do_train(args, cfg):
    """Train ``cfg.model`` as configured. Returns the results of the last evaluation (or None)."""
    model = instantiate(cfg.model)
    retrain_only = list(cfg.train.get("retrain_only", None) or [])
    if retrain_only:  # the second stage of decoupled training
        freeze_all_but(model, retrain_only)
    logger.info(f"Model:\n{model}")
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    _set_data_seed(cfg)
    train_loader = instantiate(cfg.dataloader.train)

    model = _create_ddp(model, cfg)
    if cfg.train.amp.enabled:
        precision = getattr(torch, cfg.train.amp.get("precision", "float16"))
        trainer = AMPTrainer(model, train_loader, optim, precision=precision)
    else:
        trainer = SimpleTrainer(model, train_loader, optim)
    # EFLCheckpointer: detectron2 checkpoints, plus torchvision and official EFL files, by content
    checkpointer = EFLCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    checkpointer.reinitialize = tuple(retrain_only)

    last_eval = {}

    def test_and_keep():
        last_eval["results"] = do_test(cfg, model)
        return last_eval["results"]

    clip = cfg.train.get("clip_grad", None)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            MetricsHistoryHook(),
            GradientClipHook(clip) if clip else None,
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            EFLStatsHook(
                model,
                class_frequencies=class_frequencies(cfg.dataloader.train.dataset.names),
                period=cfg.train.log_period,
            ),
            hooks.EvalHook(cfg.train.eval_period, test_and_keep),
            hooks.PeriodicWriter(
                _writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period
            )
            if comm.is_main_process()
            else None,
            # after the writer: a checkpoint of iteration k exists only once metrics.json has
            # iteration k's line, so a kill right after a save loses no line on resume
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if checkpointer.resumed_from else 0
    if hasattr(train_loader, "start_iter"):
        train_loader.start_iter = start_iter  # batch k of the resumed run = batch k of the first
    else:
        logger.warning(
            f"{type(train_loader).__name__} cannot start at an iteration: a resumed run will not "
            "see the data an uninterrupted run would (efl_d2.data.build_rfs_train_loader can)."
        )
    if comm.is_main_process():
        truncate_metrics_json(os.path.join(cfg.train.output_dir, "metrics.json"), start_iter)
    try:
        trainer.train(start_iter, cfg.train.max_iter)
    except FloatingPointError as e:
        raise RunFailed(_diverged_message(cfg, e)) from e
    return last_eval.get("results")


def _set_data_seed(cfg) -> None:
    """Give a training loader that takes a ``seed`` (and was given none) the run's data seed: one
    for all processes, ``train.seed`` itself (not seed + rank as the model's RNG)."""
    target = cfg.dataloader.train.get("_target_")
    if isinstance(target, str):  # a config loaded from yaml names its targets
        target = locate(target)
    takes_seed = callable(target) and "seed" in inspect.signature(target).parameters
    if takes_seed and cfg.dataloader.train.get("seed") is None:
        seed = cfg.train.seed if cfg.train.seed >= 0 else comm.shared_random_seed()
        cfg.dataloader.train.seed = int(seed)


def _diverged_message(cfg, e: FloatingPointError) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return (
        f"Training diverged: {first}. Checkpoints written so far are in {cfg.train.output_dir} "
        f"(they may hold the diverged weights). Lower optimizer.lr (now {cfg.optimizer.lr}) or "
        f"clip gradients with train.clip_grad (now {cfg.train.get('clip_grad', 0)}); the losses "
        "per iteration are in metrics.json."
    )


def check_results(cfg, results) -> None:
    """Raise :class:`RunFailed` unless the final evaluation produced finite AP values."""
    if "evaluator" not in cfg.dataloader:
        return
    test = cfg.dataloader.test.dataset.get("names", "the test set")
    if not results:
        raise RunFailed(
            f"The evaluation on {test} received no predictions (the evaluator's warning above "
            "says so): the model detected nothing. A diverged model does this; see the losses "
            f"in {os.path.join(cfg.train.output_dir, 'metrics.json')}."
        )
    bad = sorted(
        task
        for task, metrics in results.items()
        if isinstance(metrics, dict) and not math.isfinite(metrics.get("AP", 0.0))
    )
    if bad:
        raise RunFailed(
            f"The evaluation on {test} gave AP = nan for {bad}: the predictions are not "
            "usable (non-finite boxes or scores, or no detection matching any class). A diverged "
            f"model does this; see the losses in {os.path.join(cfg.train.output_dir, 'metrics.json')}."
        )


def main(args):
    """Entry point run in every process by ``detectron2.engine.launch``."""
    cfg = setup(args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = _create_ddp(model, cfg)
        if cfg.train.init_checkpoint:
            EFLCheckpointer(model, strict=True).load(cfg.train.init_checkpoint)
        else:
            logger.warning("--allow-random-weights: evaluating a model with random weights.")
        try:
            results = do_test(cfg, model)
        except FloatingPointError as e:
            raise RunFailed(
                f"Evaluation of {cfg.train.init_checkpoint or 'random weights'} failed: {e}."
            ) from e
    else:
        results = do_train(args, cfg)
    if comm.is_main_process():
        try:
            check_results(cfg, results)
        except RunFailed:
            _print_summary(cfg, results, trained=not args.eval_only)  # no picture of a failed run
            raise
        picture = write_summary_picture(cfg, trained=not args.eval_only)
        _print_summary(cfg, results, trained=not args.eval_only, picture=picture)
    return results


def _print_summary(cfg, results, trained: bool, picture: str | None = None) -> None:
    out = os.path.abspath(cfg.train.output_dir)
    print("\n==== efl_d2 summary ====")
    if results:
        print(format_lvis_ap(results))
    else:
        print("(no evaluation results)")
    if trained:
        print(f"checkpoint: {os.path.join(out, 'model_final.pth')}")
        print(f"metrics:    {os.path.join(out, 'metrics.json')} (TensorBoard events in {out})")
    print(f"config:     {os.path.join(out, 'config.yaml')}")
    if picture:
        print(f"picture:    {os.path.abspath(picture)} (predictions on val images | ground truth)")
