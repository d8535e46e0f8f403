"""efl_d2: Equalized Focal Loss and ATSS for dense long-tailed detection, as a Detectron2 extension.

Detectron2 itself is not on the package index under its own name; `tools/setup_env.sh` installs it
(see README). Users who already have detectron2 can `pip install -e .` alone.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def ship_configs() -> list[str]:
    """Make the repository's configs/ part of the package as efl_d2/model_zoo/configs (a symlink,
    or a copy where links fail), as detectron2 does for its model zoo, so that a non-editable
    install carries the configs that ``efl_d2.model_zoo`` serves. Returns the package_data globs."""
    src, dst = HERE / "configs", HERE / "efl_d2" / "model_zoo" / "configs"
    if src.is_dir() and not dst.exists():
        try:
            dst.symlink_to(Path("..", "..", "configs"), target_is_directory=True)
        except OSError:
            shutil.copytree(src, dst)
    return ["configs/*.md", "configs/**/*.py", "configs/**/*.md"]


setup(
    name="efl_d2",
    version="0.1.0",
    description="Equalized Focal Loss (CVPR 2022) and ATSS for long-tailed detection on Detectron2",
    python_requires=">=3.10",
    packages=find_packages(include=["efl_d2", "efl_d2.*"]),
    package_data={"efl_d2.model_zoo": ship_configs()},
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "lvis",
        "pycocotools",
        "Pillow",
        "matplotlib",
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            "pytest-timeout",
            "ruff",
            "nbclient",
            "nbformat",
            "ipykernel",
            "tensorboard",
            "scikit-learn",  # reference for PAA's Gaussian-mixture fit in tests
        ],
        # tools/export_model.py --format onnx and running exported files (efl_d2.export)
        "export": ["onnx==1.23.2", "onnxruntime==1.32.0", "onnxscript==0.7.2"],
    },
)
