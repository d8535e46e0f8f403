"""Every tool that takes weights fails on a bad weights path with one ``error:`` line naming the
path and exit status 2, before any model is built: a missing file, a directory, a file it may not
read, a file that is not a checkpoint (text, a truncated zip). URLs are not checked as paths."""

import os
import pickle
import sys

import numpy as np
import pytest
import torch
from _tiny_zoo import (
    REPO,
    refuse_to_open,
    run_in_repo,
    run_tool,
    single_thread_env,
    write_tiny_config,
)
from PIL import Image

from efl_d2.checkpoint import CheckpointReadError, check_checkpoint_file, load_checkpoint_file
from efl_d2.checkpoint import formats as checkpoint_formats

TOOLS = (
    "predict",
    "plot_fig4_scores",
    "plot_efl_stats",
    "convert_official_to_d2",
    "convert_torchvision_to_d2",
)


@pytest.fixture
def files(tmp_path):
    """A tiny config, an image, and one weights path per kind of bad file."""
    config = write_tiny_config(tmp_path)
    image = str(tmp_path / "image.jpg")
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(image)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_0000009.pth").write_bytes(b"")
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    whole = tmp_path / "whole.pth"
    torch.save({"model": {"w": torch.zeros(64, 64)}}, whole)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    bad = {
        "missing": str(tmp_path / "no_such_model.pth"),
        "directory": str(run),
        "text": str(text),
        "truncated zip": str(truncated),
    }
    return config, image, bad


def tool_args(tool: str, weights: str, config: str, image: str, out) -> list:
    out = str(out)
    return {
        "predict": ["--config-file", config, "--checkpoint", weights, "--input", image]
        + ["--output", out],
        "plot_fig4_scores": ["--panel", "A", config, weights, "--output", out + ".png"],
        "plot_efl_stats": [weights, "--output", out + ".png"],
        "convert_official_to_d2": [weights, out + ".pth"],
        "convert_torchvision_to_d2": [weights, out + ".pth"],
    }[tool]


def assert_one_error_line(stderr: str, path: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and path in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def nothing_built(monkeypatch):
    """Fail the test if a tool builds a model or reads a dataset."""
    import detectron2.data

    from efl_d2 import model_zoo

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was built / a dataset read before the weights were checked")

    monkeypatch.setattr(model_zoo, "build_model", forbidden)
    monkeypatch.setattr(detectron2.data, "get_detection_dataset_dicts", forbidden)


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("kind", ["missing", "directory", "text", "truncated zip"])
def test_bad_weights_are_one_error_line_and_status_2(
    tool, kind, files, tmp_path, capsys, nothing_built
):
    config, image, bad = files
    path = bad[kind]
    with pytest.raises(SystemExit) as e:
        run_tool(tool).main(tool_args(tool, path, config, image, tmp_path / "out"))
    assert e.value.code == 2
    line = assert_one_error_line(capsys.readouterr().err, path)
    expected = {
        "missing": "no such file",
        "directory": "is a directory",
        "text": "not a PyTorch checkpoint",
        "truncated zip": "truncated or damaged",
    }[kind]
    assert expected in line
    assert not [p for p in os.listdir(tmp_path) if p.startswith("out")]  # nothing written


@pytest.mark.parametrize("tool", TOOLS)
def test_a_file_it_may_not_read_is_one_error_line(tool, files, tmp_path, capsys, monkeypatch):
    """Simulated (the tests may run as root, who reads any file): opening it is refused."""
    config, image, _ = files
    path = str(tmp_path / "locked.pth")
    torch.save({"model": {}}, path)

    refuse_to_open(monkeypatch, checkpoint_formats, path)
    with pytest.raises(SystemExit) as e:
        run_tool(tool).main(tool_args(tool, path, config, image, tmp_path / "out"))
    assert e.value.code == 2
    assert "permission denied" in assert_one_error_line(capsys.readouterr().err, path)


def test_the_directory_message_names_the_runs_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model_0000009.pth", "model_final.pth"):
        torch.save({}, run / name)
    (run / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(CheckpointReadError, match=r"such as .*run/model_0000009\.pth"):
        check_checkpoint_file(str(run))


def test_every_checkpoint_format_passes_the_check(tmp_path):
    state = {"model": {"w": torch.zeros(2)}}
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    numpy_state = {"model": {"w": np.zeros(2)}}
    for protocol in (0, 1, 2, pickle.HIGHEST_PROTOCOL):  # detectron2 model-zoo .pkl files
        with open(tmp_path / f"p{protocol}.pkl", "wb") as f:
            pickle.dump(numpy_state, f, protocol=protocol)
    for name in sorted(os.listdir(tmp_path)):
        check_checkpoint_file(str(tmp_path / name))
    for url in ("https://example.com/no_such.pth", "detectron2://ImageNetPretrained/x.pkl"):
        check_checkpoint_file(url)  # fetched when loaded, not checked as paths


def test_load_checkpoint_file_calls_a_missing_file_missing(tmp_path):
    """Not 'truncated, delete it' (what torch.load's FileNotFoundError used to become)."""
    with pytest.raises(CheckpointReadError, match="no such file") as e:
        load_checkpoint_file(str(tmp_path / "nope.pth"))
    assert "Delete" not in str(e.value)


@pytest.mark.parametrize("url", ["https://example.com/w.pth", "detectron2://R-50.pkl"])
def test_predict_passes_urls_to_the_loader(url, files, tmp_path, monkeypatch):
    from efl_d2 import model_zoo

    config, image, _ = files
    seen = []

    def build_model(cfg, *, weights=None, **kwargs):
        seen.append(weights)
        raise KeyboardInterrupt  # stop here: the URL got through

    monkeypatch.setattr(model_zoo, "build_model", build_model)
    with pytest.raises(KeyboardInterrupt):
        run_tool("predict").main(tool_args("predict", url, config, image, tmp_path / "out"))
    assert seen == [url]


@pytest.mark.slow
@pytest.mark.parametrize("tool", TOOLS)
def test_tool_processes_exit_2_with_one_error_line(tool, files, tmp_path, env_with_datasets):
    """The scripts as run from a shell, for a missing file (``python -O`` for predict: its
    check is not an assert)."""
    config, image, bad = files
    path = bad["missing"]
    flags = ["-O"] if tool == "predict" else []
    cmd = [sys.executable, *flags, os.path.join(REPO, "tools", f"{tool}.py")]
    proc = run_in_repo(
        cmd + tool_args(tool, path, config, image, tmp_path / "out"),
        single_thread_env(env_with_datasets),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no such file" in assert_one_error_line(proc.stderr, path)


@pytest.mark.slow
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may read any file"
)
def test_predict_process_on_a_file_without_read_permission(files, tmp_path, env_with_datasets):
    config, image, _ = files
    path = tmp_path / "locked.pth"
    torch.save({"model": {}}, path)
    path.chmod(0)
    proc = run_in_repo(
        [sys.executable, os.path.join(REPO, "tools", "predict.py")]
        + tool_args("predict", str(path), config, image, tmp_path / "out"),
        single_thread_env(env_with_datasets),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "permission denied" in assert_one_error_line(proc.stderr, str(path))
