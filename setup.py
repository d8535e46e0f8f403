"""efl_d2: Equalized Focal Loss and ATSS for dense long-tailed detection, as a Detectron2 extension.

Detectron2 itself is not on the package index under its own name; `tools/setup_env.sh` installs it
(see README). Users who already have detectron2 can `pip install -e .` alone.
"""

from setuptools import find_packages, setup

setup(
    name="efl_d2",
    version="0.1.0",
    description="Equalized Focal Loss (CVPR 2022) and ATSS for long-tailed detection on Detectron2",
    python_requires=">=3.10",
    packages=find_packages(include=["efl_d2", "efl_d2.*"]),
    install_requires=["torch", "torchvision", "numpy", "lvis", "pycocotools", "Pillow", "matplotlib"],
    extras_require={
        "dev": ["pytest>=7", "pytest-timeout", "ruff", "nbclient", "nbformat", "ipykernel", "tensorboard"],
    },
)
