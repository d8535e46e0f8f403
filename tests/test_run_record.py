"""An output folder is its run's true record: one writer (the lock), the config each iteration
used (``--resume`` against the checkpointed run's config), failures that say so (exit status and
one ``error:`` line)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _tiny_zoo import TINY_TRAIN_OVERRIDES, run_train_net
from detectron2.config import instantiate

from efl_d2.engine.resume_config import (
    affects_training,
    apply_new_hyperparameters,
    config_differences,
)
from efl_d2.engine.run_lock import LOCK_FILE, OutputDirInUse, OutputDirLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "mini_lvis/atss_efl_R18.py"

_HOLD_LOCK = """
import sys, time
from efl_d2.engine.run_lock import OutputDirLock
OutputDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def _hold_lock(folder):
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_folder_is_refused_naming_its_holder_until_the_holder_dies(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(OutputDirInUse, match=rf"in use by another run \(pid {holder.pid} on "):
            OutputDirLock(str(tmp_path)).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_FILE).is_file()  # left behind by the killed holder: blocks nothing
    lock = OutputDirLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    OutputDirLock(str(tmp_path)).acquire().release()  # released: free again


@pytest.mark.slow
def test_a_second_run_on_a_folder_in_use_is_refused_and_the_first_is_unharmed(
    tmp_path, env_with_datasets
):
    out = tmp_path / "run"
    common = ["--config-file", CONFIG, *TINY_TRAIN_OVERRIDES, f"train.output_dir={out}"]
    first = _start_training(
        [*common, "train.max_iter=12", "train.log_period=1"], env_with_datasets, out
    )
    second = run_train_net(
        [*common, "train.max_iter=12", "optimizer.lr=0.02", "train.seed=1"], env_with_datasets
    )
    assert second.returncode == 2
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"in use by another run (pid {first.pid} " in errors[0]
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    lines = _lines(out)
    assert [m["iteration"] for m in lines] == [*range(12), 12]  # one run's lines, in order
    assert all(m["lr"] <= 0.01 for m in lines if "lr" in m)
    assert (
        "lr: 0.01" in (out / "config.yaml").read_text()
        and "seed: 0" in (out / "config.yaml").read_text()
    )


def _text(path):
    return path.read_text() if path.is_file() else ""


def _start_training(args, env, out):
    """``tools/train_net.py args`` started in the background, returned once its first metrics
    line is written (stderr kept for ``communicate``)."""
    proc = subprocess.Popen(
        [sys.executable, "tools/train_net.py", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while proc.poll() is None and not _text(out / "metrics.json").strip():
        assert time.time() < deadline
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.max_itr=10", "did you mean train.max_iter?"),
        ("optimizer.lr=[", "cannot parse the overrides"),
        ("+train.max_iter.deeper=1", "cannot apply the overrides"),
    ],
)
def test_train_net_config_problems_exit_2_with_one_error_line(
    tmp_path, env_with_datasets, override, expected
):
    proc = run_train_net(
        ["--config-file", CONFIG, override, f"train.output_dir={tmp_path}"], env_with_datasets
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in proc.stderr, proc.stderr[-3000:]


def test_a_missing_config_file_exits_2(tmp_path, env_with_datasets):
    proc = run_train_net(["--config-file", str(tmp_path / "nope.py")], env_with_datasets)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:") and "nope.py" in proc.stderr


# ---------------------------------------------------------------------------------------------
# --resume with the checkpointed run's config


def test_config_differences_and_what_affects_training():
    old = "optimizer: {lr: 0.01}\ntrain: {max_iter: 8, eval_period: 0}\nmodel: {test_nms_thresh: 0.6}\n"
    new = "optimizer: {lr: 0.05}\ntrain: {max_iter: 8, eval_period: 4, x: 1}\nmodel: {test_nms_thresh: 0.5}\n"
    diffs = config_differences(old, new)
    assert diffs == [
        ("model.test_nms_thresh", 0.6, 0.5),
        ("optimizer.lr", 0.01, 0.05),
        ("train.eval_period", 0, 4),
        ("train.x", "<absent>", 1),
    ]
    assert [k for k, _, _ in diffs if affects_training(k)] == ["optimizer.lr", "train.x"]
    # values detectron2 saves as python objects compare as data
    shape = "model: {s: !!python/object:detectron2.layers.shape_spec.ShapeSpec {channels: 3}}\n"
    assert config_differences(shape, shape) == []
    assert (
        config_differences(shape, shape.replace("3", "4"))[0][0]
        == "model.s.python/object:detectron2.layers.shape_spec.ShapeSpec.channels"
    )


def test_new_hyperparameters_become_the_schedules_base():
    from detectron2.solver import LRMultiplier
    from fvcore.common.param_scheduler import MultiStepParamScheduler

    param = torch.nn.Parameter(torch.zeros(1))
    old = torch.optim.SGD([param], lr=0.01, momentum=0.9, weight_decay=1e-4)
    LRMultiplier(old, MultiStepParamScheduler([1, 0.1], milestones=[4], num_updates=8), 8)
    state = old.state_dict()  # a checkpointed optimizer: initial_lr 0.01
    new = torch.optim.SGD([param], lr=0.05, momentum=0.8, weight_decay=1e-4)
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in new.param_groups]
    new.load_state_dict(state)
    assert new.param_groups[0]["initial_lr"] == 0.01  # the checkpoint wins: what detectron2 does
    apply_new_hyperparameters(new, fresh)
    sched = LRMultiplier(
        new, MultiStepParamScheduler([1, 0.1], milestones=[6], num_updates=12), 12, last_iter=4
    )
    assert sched.get_last_lr() == [pytest.approx(0.05)] and new.param_groups[0]["momentum"] == 0.8


def _lines(out):
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


@pytest.mark.slow
def test_resume_refuses_a_changed_config_unless_allowed_then_records_both(
    tmp_path, env_with_datasets
):
    out = tmp_path / "run"
    base = [
        "--config-file",
        CONFIG,
        *TINY_TRAIN_OVERRIDES,
        "train.log_period=1",
        "train.checkpointer.period=100",
        f"train.output_dir={out}",
    ]
    proc = run_train_net([*base, "train.max_iter=4"], env_with_datasets)
    assert proc.returncode == 0, proc.stderr[-4000:]
    first_config = (out / "config.yaml").read_text()
    files = sorted(os.listdir(out))

    changed = [*base, "train.max_iter=8", "optimizer.lr=0.05", "train.log_period=2", "--resume"]
    proc = run_train_net(changed, env_with_datasets)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "optimizer.lr: 0.01 -> 0.05" in proc.stderr and "train.max_iter: 4 -> 8" in proc.stderr
    assert "train.log_period" not in proc.stderr  # changes nothing that training computes
    assert "--allow-config-change" in proc.stderr
    assert sorted(os.listdir(out)) == files and (out / "config.yaml").read_text() == first_config

    proc = run_train_net([*changed, "--allow-config-change"], env_with_datasets)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "Config changed at iteration 4" in log and "optimizer.lr: 0.01 -> 0.05" in log
    assert (out / "config.before_iter_0000004.yaml").read_text() == first_config
    assert "lr: 0.05" in (out / "config.yaml").read_text()
    lrs = {m["iteration"]: m["lr"] for m in _lines(out) if "lr" in m}
    assert sorted(lrs) == [0, 1, 2, 3, 5, 7]  # the new log period from iteration 4 on
    # the old base lr over the old length up to iteration 3, the new base lr over the new
    # length from iteration 4 on (the schedule is a function of iteration / max_iter)
    from efl_d2.model_zoo import get_config

    multiplier = instantiate(get_config(CONFIG).lr_multiplier)
    assert lrs[3] == pytest.approx(0.01 * multiplier(3 / 4))
    assert lrs[5] == pytest.approx(0.05 * multiplier(5 / 8))
    assert lrs[7] == pytest.approx(0.05 * multiplier(7 / 8)) and lrs[7] != lrs[5]


# ---------------------------------------------------------------------------------------------
# preemption signals in data-loader workers


def _worker(ready):
    from efl_d2.engine.preemption import ignore_signals

    ignore_signals()
    ready.set()
    time.sleep(600)


def test_a_data_worker_ignores_preemption_signals_but_not_its_parents_sigterm():
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    worker = ctx.Process(target=_worker, args=(ready,), daemon=True)
    worker.start()
    assert ready.wait(60)
    for sig in ("-TERM", "-USR1"):  # sent by another process: a scheduler signalling the job
        subprocess.run(["kill", sig, str(worker.pid)], check=True)
    worker.join(1.0)
    assert worker.is_alive()
    worker.terminate()  # SIGTERM from the parent: how the loader and Python's exit stop workers
    worker.join(30)
    assert worker.exitcode == -signal.SIGTERM


def _training_processes(launcher_pid):
    """pids of the training processes a launcher spawned (not its resource tracker), by rank."""
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    return sorted(
        int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
    )


@pytest.mark.slow
def test_a_killed_training_process_ends_the_run_with_one_error_line_and_the_resume_command(
    tmp_path, env_with_datasets
):
    out = tmp_path / "run"
    args = [
        "--config-file",
        CONFIG,
        *TINY_TRAIN_OVERRIDES,
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",
        "train.max_iter=50",
        "train.log_period=1",
        f"train.output_dir={out}",
    ]
    proc = _start_training(args, env_with_datasets, out)
    ranks = _training_processes(proc.pid)
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "training process 1 was killed by SIGKILL" in errors[0]
    assert errors[0].rstrip().endswith("--resume") and "Traceback" not in stderr
