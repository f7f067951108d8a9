"""What every test shares: no network, float32 and a fixed seed, and the tiny models and folders.

The helpers are fixtures that return functions (`randomize(model)`, `tiny_vit(...)`), so that a
test can call them several times with its own arguments; they are session-scoped so that module-
and session-scoped fixtures can use them too. Each sub-folder's `conftest.py` adds what only its
tests use.

The core tests run on every Keras backend (`KERAS_BACKEND=torch` / `jax`, see `.ci/run`): they read
outputs with `to_numpy` and take gradients with `values_and_gradients`; a test that needs TensorFlow
itself (SavedModel, LiteRT, tf.data, `keras_vit.deploy`, `keras_vit.training`) carries
`@pytest.mark.tensorflow` and is skipped on the other backends.
"""

import ipaddress
import os
import pathlib
import shutil
import socket
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


class NetworkBlocked(OSError):
    """A test tried to reach another machine."""


class LookupBlocked(socket.gaierror):
    """A test tried to look up another machine's name (a DNS query): what an offline machine answers."""


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _local(address):
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def pytest_collection_modifyitems(config, items):
    """Skips the tests marked `tensorflow` when Keras runs on another backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs TensorFlow (SavedModel, LiteRT, tf.data); Keras runs on {backend} here")
    for item in items:
        if "tensorflow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """No test reaches the network: an IP connection to anything but this machine fails at once,
    and so does a name lookup (which would send a DNS query before any connection is tried).

    Guards Python's sockets (urllib, requests, TFDS and Keras downloads); the two-worker test's
    gRPC runs in subprocesses on localhost. Checked by `training/test_data.py::test_the_suite_is_offline`.
    """
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def lookup(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name != "localhost" and not _is_ip(name):  # a name needs a DNS query
            raise LookupBlocked(socket.EAI_NONAME, f"a test tried to look up {host!r}; tests must run offline")
        return getaddrinfo(host, *args, **kwargs)

    def guard(method):
        def guarded(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
                raise NetworkBlocked(f"a test tried to reach {address!r}; tests must run offline")
            return method(self, address)

        return guarded

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = guard(connect), guard(connect_ex), lookup
    yield
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    """Each test starts in float32 with a fixed seed, whatever the last one set."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def repo():
    """The repository root (`pathlib.Path`), where `export/`, `benchmarks/` and `notebooks/` live."""
    return REPO


@pytest.fixture(scope="session")
def randomize():
    """`randomize(model, seed=1, scale=0.2)`: every weight drawn from N(0, scale²); returns the model.

    Replaces the zero initialisations (class token, head) and unit norms, which would hide bugs:
    with every weight random, a wrong or missing weight changes the outputs.
    """

    def randomize(model, seed=1, scale=0.2):
        rng = np.random.default_rng(seed)
        for weight in model.weights:
            weight.assign(rng.normal(scale=scale, size=weight.shape).astype("float32"))
        return model

    return randomize


@pytest.fixture(scope="session")
def tiny_vit():
    """`tiny_vit(variant="tiny/4", image_size=16, num_classes=3, **options)`: `build_vit` of a test-sized ViT.

    The `tiny` row of the variants table (2 blocks, width 64) at a small image size: built in well
    under a second, so every test can make its own.
    """

    def tiny_vit(variant="tiny/4", *, image_size=16, num_classes=3, **options):
        import keras_vit

        return keras_vit.build_vit(variant, image_size=image_size, num_classes=num_classes, **options)

    return tiny_vit


@pytest.fixture(scope="session")
def write_run_folder():
    """`write_run_folder(directory, model, labels, scaling="vit", **metadata)`: a trained model's folder.

    What `keras-vit train` leaves for `predict`, `export` and `evaluate` to read: `model.keras`
    and `keras_vit.json` (the model's image size, the pixel scaling, the labels, and any `metadata`).
    Returns the folder, created if needed.
    """

    def write(directory, model, labels, scaling="vit", **metadata):
        from keras_vit import run_folder

        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model.save(directory / run_folder.MODEL)
        image_size = tuple(model.input_shape[1:3])
        run_folder.write_metadata(directory, image_size=image_size, scaling=scaling, labels=labels, **metadata)
        return directory

    return write


@pytest.fixture(scope="session")
def not_blank():
    """`not_blank(path)`: whether a written image shows something (its pixels vary), not an empty canvas."""

    def not_blank(path):
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).std() > 5

    return not_blank


@pytest.fixture(scope="session")
def to_numpy():
    """`to_numpy(x)`: a backend tensor (or a list, tuple or dict of them) as NumPy arrays, on any backend.

    `np.asarray` fails on a PyTorch tensor that requires grad (every layer output does): this does not.
    """
    return lambda x: keras.tree.map_structure(keras.ops.convert_to_numpy, x)


@pytest.fixture(scope="session")
def values_and_gradients():
    """`values_and_gradients(fn, inputs, upstream, weights=())`: `fn(*inputs)` and its gradients, on any backend.

    Returns NumPy arrays: the output (as float32), then the gradient of `sum(float32(fn(*inputs)) *
    upstream)` with respect to every input (NumPy arrays), then every weight (Keras variables that
    `fn` reads). Taken with the backend's own autodiff: `tf.GradientTape`, `torch.autograd.grad` or
    `jax.grad`, so that a hand-written `ops.custom_gradient` is what gets differentiated.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def values_and_gradients(fn, inputs, upstream, weights=()):
            inputs = [tf.Variable(v) for v in inputs]
            with tf.GradientTape() as tape:
                out = tf.cast(fn(*inputs), "float32")  # half-precision outputs too
                loss = tf.reduce_sum(out * upstream)
            return [out.numpy()] + [g.numpy() for g in tape.gradient(loss, inputs + [w.value for w in weights])]

    elif backend == "torch":
        import torch

        def values_and_gradients(fn, inputs, upstream, weights=()):
            inputs = [keras.ops.convert_to_tensor(v).detach().requires_grad_() for v in inputs]
            out = fn(*inputs).float()
            loss = torch.sum(out * keras.ops.convert_to_tensor(upstream))
            gradients = torch.autograd.grad(loss, inputs + [w.value for w in weights])
            return [out.detach().cpu().numpy()] + [g.cpu().numpy() for g in gradients]

    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        def values_and_gradients(fn, inputs, upstream, weights=()):
            def loss(inputs, values):  # the weights' values go in through a stateless scope
                with keras.StatelessScope(state_mapping=list(zip(weights, values))):
                    out = fn(*inputs).astype("float32")
                return jnp.sum(out * upstream), out

            grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
            (d_inputs, d_weights), out = grad([jnp.asarray(v) for v in inputs], [w.value for w in weights])
            return [np.asarray(out)] + [np.asarray(g) for g in [*d_inputs, *d_weights]]

    else:
        pytest.skip(f"no gradient helper for the {backend} backend")
    return values_and_gradients


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write into, root included.

    Root ignores permission bits, so as root the folder is made immutable (`chattr +i`, which
    stops root too); as anyone else it is `chmod 555`.
    """
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)]).returncode:
            pytest.skip("running as root where chattr +i does not work: no folder is read-only for root")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = None
    try:
        yield folder
    finally:
        if undo:
            subprocess.run(undo)
        else:
            folder.chmod(0o755)
