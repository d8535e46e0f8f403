"""Shared fixtures: one small mini-LVIS build per test session, registered under its usual names."""

import os

import pytest

import efl_d2  # noqa: F401  (registers datasets, applies the LVIS numpy-2 shim)
from efl_d2._warnings import ignore_third_party_deprecations

# Small enough to build in seconds, large enough for all three LVIS frequency groups.
SMALL_MINI_LVIS = dict(  # noqa: C408
    seed=0,
    num_train_images=160,
    num_val_images=30,
    num_categories=10,
    image_size=(96, 128),
    max_images_per_category=110,
)


@pytest.fixture(autouse=True)
def _third_party_deprecations_ignored():
    """The filters ``import efl_d2`` installs, inside each test too: pytest restores the warning
    filters around collection and around each test, so those installed at import are gone."""
    ignore_third_party_deprecations()


@pytest.fixture(scope="session")
def mini_lvis_root(tmp_path_factory) -> str:
    """Datasets root holding a small mini-LVIS; ``mini_lvis_v1_{train,val}`` point at it."""
    from efl_d2.data import ensure_mini_lvis

    root = str(tmp_path_factory.mktemp("datasets"))
    ensure_mini_lvis(root, **SMALL_MINI_LVIS)
    return root


@pytest.fixture
def env_with_datasets(mini_lvis_root) -> dict:
    """Environment for subprocesses: the same datasets root, no GPU, quiet warnings."""
    env = dict(os.environ)
    env.update(DETECTRON2_DATASETS=mini_lvis_root, CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    return env


@pytest.fixture(scope="session")
def mini_openimages_root(mini_lvis_root) -> str:
    """mini-OpenImages built from the session's small mini-LVIS; ``mini_openimages_{train,val}``
    (and the Challenge 2019 names) point at the session's datasets root."""
    from efl_d2.data import register_openimages
    from efl_d2.data.mini_openimages import generate_mini_openimages

    out = generate_mini_openimages(mini_lvis_root, lvis_root=mini_lvis_root, seed=0)
    register_openimages(mini_lvis_root)
    return out
