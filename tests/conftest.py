import ipaddress
import os
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


class NetworkBlocked(OSError):
    """A test tried to reach another machine."""


def _local(address):
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """No test reaches the network: an IP connection to anything but this machine fails at once.

    Guards Python's sockets (urllib, requests, TFDS and Keras downloads); the two-worker test's
    gRPC runs in subprocesses on localhost. Checked by `test_data.py::test_the_suite_is_offline`.
    """
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(method):
        def guarded(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
                raise NetworkBlocked(f"a test tried to reach {address!r}; tests must run offline")
            return method(self, address)

        return guarded

    socket.socket.connect, socket.socket.connect_ex = guard(connect), guard(connect_ex)
    yield
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


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
