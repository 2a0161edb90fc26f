"""Mini CUHK-SYSU and PRW trees written by the synthetic generator, shared by the data tests."""

import os

import pytest

from psdiff.data.synthetic import write_cuhk_sysu, write_prw

CUHK_OPTIONS = dict(
    num_train_images=8,
    num_test_images=10,
    num_train_ids=3,
    num_test_ids=4,
    image_size=(72, 96),
    gallery_sizes=(6, 9),
    seed=3,
)
PRW_OPTIONS = dict(
    num_train_frames=8,
    num_test_frames=10,
    num_train_ids=3,
    num_test_ids=4,
    camera_sizes=((72, 128), (72, 128), (80, 100)),
    seed=6,  # a seed whose mini tree holds every quirk test_prw checks for
)


@pytest.fixture(scope="session")
def cuhk_options():
    """The options of the mini CUHK-SYSU tree (tests derive variants from them)."""
    return dict(CUHK_OPTIONS)


@pytest.fixture(scope="session")
def prw_options():
    """The options of the mini PRW tree."""
    return dict(PRW_OPTIONS)


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    """A datasets root (DATASETS.ROOT) whose synthetic/ folder receives the mini trees."""
    return str(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="session")
def cuhk_tree(datasets_root):
    """(dataset folder, ground truth) of a mini CUHK-SYSU tree at <root>/synthetic/CUHK-SYSU."""
    root = os.path.join(datasets_root, "synthetic", "CUHK-SYSU")
    return root, write_cuhk_sysu(root, **CUHK_OPTIONS)


@pytest.fixture(scope="session")
def prw_tree(datasets_root):
    """(dataset folder, ground truth) of a mini PRW tree at <root>/synthetic/PRW."""
    root = os.path.join(datasets_root, "synthetic", "PRW")
    return root, write_prw(root, **PRW_OPTIONS)
