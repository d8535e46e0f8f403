"""Training and evaluation with LazyConfig files: the logic behind ``tools/train_net.py``.

Detectron2's ``tools/lazyconfig_train_net.py`` (``do_test``, ``do_train``, ``main``) with what the
paper needs: global-norm gradient clipping (``train.clip_grad``), a seed (``train.seed``), CPU
fall-back when CUDA is absent, AMP precision from the config; and what a two-day run needs: checks
of the whole config before the first step (:mod:`.preflight`), exact resume (data indexed by
iteration, metric history in the checkpoint, atomic checkpoints) and a failed run that says so
(:class:`RunFailed`, a non-zero exit of ``tools/train_net.py``). The command line is :mod:`.cli`,
``--eval-protocol`` :mod:`.eval_protocol`, the results table and the summary :mod:`.report`.
"""

import inspect
import logging
import os

import torch
from detectron2.config import instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_setup, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from detectron2.utils.logger import setup_logger
from detectron2.utils.registry import locate

from ..checkpoint import EFLCheckpointer
from ..data import class_frequencies
from ..data.custom import custom_data_summary
from ..visualization import write_summary_picture
from .cli import load_config
from .decoupled import freeze_all_but
from .efl_stats_hook import EFLStatsHook
from .hooks import GradientClipHook
from .preemption import EXIT_PREEMPTED, Preempted, PreemptionHook
from .preflight import ResumePoint, check_run
from .report import RunFailed, check_results, format_lvis_ap, print_summary
from .resume import MetricsHistoryHook, truncate_metrics_json
from .resume_config import (
    RunConfigRecord,
    affects_training,
    apply_new_hyperparameters,
    config_yaml,
    format_differences,
    keep_previous_config,
    previous_config_path,
)

__all__ = ["do_test", "do_train", "main", "preflight", "record_resumed_config", "setup"]

logger = logging.getLogger("efl_d2")


def _resolve_device(cfg) -> None:
    if str(cfg.train.device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA is not available: training and evaluating on CPU.")
        cfg.train.device = "cpu"
    if cfg.train.device == "cpu" and cfg.train.amp.enabled:
        logger.warning("AMP needs CUDA (detectron2's AMPTrainer): disabling AMP on CPU.")
        cfg.train.amp.enabled = False


def preflight(args) -> tuple:
    """All checks that need no training (:func:`efl_d2.engine.preflight.check_run`); raises
    ``ConfigCheckError`` listing every problem. ``tools/train_net.py`` runs it before launching.
    Returns the config and the :class:`ResumePoint` of a resumed run (or None)."""
    cfg = load_config(args)
    _resolve_device(cfg)
    point = check_run(
        cfg,
        eval_only=args.eval_only,
        resume=args.resume,
        allow_random_weights=getattr(args, "allow_random_weights", False),
        allow_config_change=getattr(args, "allow_config_change", False),
    )
    return cfg, point


def record_resumed_config(cfg, args, point: ResumePoint | None, *, keep_file: bool = True) -> None:
    """Before a resumed run rewrites ``config.yaml``: keep the checkpointed run's config as
    ``config.before_iter_<k>.yaml`` when the new one differs (``keep_file``: on the machine that
    writes the output folder), and hand the differences to the training processes
    (``args.config_changes``), which log them and apply the new optimizer hyper-parameters. Run by
    the launching process of every machine, after :func:`preflight` passed."""
    args.config_changes = []
    if point is None or not point.differences:
        return
    start = point.iteration + 1
    kept = previous_config_path(cfg.train.output_dir, start)
    if keep_file:
        keep_previous_config(cfg.train.output_dir, start, point.old_config)
    args.config_changes = format_differences(point.differences)
    args.config_changes_train = any(affects_training(k) for k, _, _ in point.differences)
    args.config_changes_note = (
        f"Config changed at iteration {start} (resumed from {point.checkpoint}): "
        + "; ".join(args.config_changes)
        + f". Iterations before {start} used {kept}; config.yaml is the config from {start} on."
    )


def setup(args):
    """Load the config, apply overrides, fall back to CPU if needed, then ``default_setup``."""
    cfg = load_config(args)
    _resolve_device(cfg)
    default_setup(cfg, args)
    # efl_d2's own progress lines (sampling, decoupled training, ...) next to detectron2's
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="efl_d2")
    if "custom" in cfg:
        logger.info("Custom data:\n" + custom_data_summary())
    return cfg


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
    """Train ``cfg.model`` as configured. Returns the results of the last evaluation (or None).

    A resumed run continues exactly where the checkpoint left off with efl_d2's training loader;
    with one that cannot start at an iteration (Detectron2's, ``dataloader.train.loader=
    detectron2``) it resumes the model, optimizer and schedule but not the data: it sees other
    images and augmentations than the uninterrupted run would (a warning says so).
    """
    run_config = RunConfigRecord(config_yaml(cfg))  # before the config is given live objects
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
    checkpointer = EFLCheckpointer(
        model,
        cfg.train.output_dir,
        reinitialize=retrain_only,
        trainer=trainer,
        run_config=run_config,  # the next --resume compares its config with it
    )

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
            PreemptionHook(checkpointer),  # last: the iteration's lines and checkpoint come first
        ]
    )

    new_hyperparameters = [
        {k: v for k, v in g.items() if k != "params"} for g in optim.param_groups
    ]
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if checkpointer.resumed_from else 0
    if start_iter and getattr(args, "config_changes", None):
        logger.warning(args.config_changes_note)
        if args.config_changes_train:  # allowed on purpose: the new config from here on
            apply_new_hyperparameters(optim, new_hyperparameters)
    if hasattr(train_loader, "start_iter"):
        train_loader.start_iter = start_iter  # batch k of the resumed run = batch k of the first
    elif start_iter:
        logger.warning(
            f"Resuming at iteration {start_iter} with {type(train_loader).__name__}, which "
            "cannot start at an iteration: the resume is not bit-exact (the run sees other "
            "images and augmentations than an uninterrupted one; efl_d2's loader, "
            "dataloader.train.loader=efl_d2, resumes exactly)."
        )
    if comm.is_main_process():
        truncate_metrics_json(os.path.join(cfg.train.output_dir, "metrics.json"), start_iter)
    try:
        trainer.train(start_iter, cfg.train.max_iter)
    except FloatingPointError as e:
        raise RunFailed(_diverged_message(cfg, e)) from e
    finally:  # stop the loader's workers now, not in Python's exit (which kills them)
        trainer._data_loader_iter_obj = None
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
        try:
            results = do_train(args, cfg)
        except Preempted:
            raise SystemExit(EXIT_PREEMPTED) from None  # the exit status a worker can pass on
    if comm.is_main_process():
        trained = not args.eval_only
        try:
            check_results(cfg, results)
        except RunFailed:
            print_summary(cfg, results, trained=trained)  # no picture of a failed run
            raise
        picture = write_summary_picture(cfg, trained=trained)
        print_summary(cfg, results, trained=trained, picture=picture)
    return results
