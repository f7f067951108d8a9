import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    """Each test starts in float32 with a fixed seed, whatever the last one set."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


# Scripts the tests run in subprocesses; importing them here (doctest collection) would run
# TensorFlow and PyTorch in one process.
collect_ignore_glob = ["*_worker.py", "torch_reference.py"]
