"""Shared test set-up: quiet TensorFlow, a fixed thread budget, the global dtype policy reset after each test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The package default (sassnet_tf.utils.runtime), also for test modules that import TensorFlow first.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("SASSNET_TF_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "sassnet"))

import pathlib  # noqa: E402

import pytest  # noqa: E402

from tools.records import default_la_root  # noqa: E402  (the one place the tools and the tests look for the data)

LA_ROOT = pathlib.Path(default_la_root())


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"real LA data not found at {LA_ROOT}")
    for item in items:
        if "real_data" in item.keywords and not LA_ROOT.is_dir():
            item.add_marker(skip)


@pytest.fixture
def la_root():
    if not LA_ROOT.is_dir():
        pytest.skip(f"real LA data not found at {LA_ROOT}")
    return LA_ROOT


@pytest.fixture(autouse=True)
def _reset_dtype_policy():
    yield
    import sys

    if "keras" in sys.modules:
        import keras

        keras.mixed_precision.set_dtype_policy("float32")
