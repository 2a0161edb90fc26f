"""A small synthetic CUHK-SYSU tree, written once per session by the real generator."""

import pytest

from psdiff.data.synthetic import write_cuhk_sysu


@pytest.fixture(scope="session")
def teacher_datasets_root(tmp_path_factory):
    """Datasets root holding synthetic/CUHK-SYSU: 80 train images (20 identities), 60 test."""
    root = tmp_path_factory.mktemp("teacher_datasets")
    write_cuhk_sysu(str(root / "synthetic" / "CUHK-SYSU"), num_train_images=80,
                    num_test_images=60, num_train_ids=20, num_test_ids=20, image_size=(128, 160),
                    gallery_sizes=(20,), seed=0)
    return str(root)
