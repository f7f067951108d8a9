"""tf.distribute: two replicas train to the weights of one; two workers train together."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")


def _run(log_dir, *args):
    """Starts a worker; its output goes to files, as an unread pipe that fills would stall it."""
    out = open(os.path.join(log_dir, f"{os.path.basename(args[2])}.out"), "w+")
    err = open(os.path.join(log_dir, f"{os.path.basename(args[2])}.err"), "w+")
    process = subprocess.Popen([sys.executable, WORKER, *args], stdout=out, stderr=err, text=True)
    process.logs = (out, err)
    return process


def _finish(process, timeout=600):
    process.wait(timeout=timeout)
    out, err = process.logs
    out.seek(0)
    err.seek(0)
    output, errors = out.read(), err.read()
    out.close()
    err.close()
    assert process.returncode == 0, errors[-3000:]
    return json.loads(output.strip().splitlines()[-1])


def _weights(path):
    with np.load(path, allow_pickle=False) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_mirrored_over_two_devices_trains_to_the_weights_of_one(tmp_path):
    runs = [
        _run(tmp_path, strategy, str(tmp_path / name), str(tmp_path / f"{name}.npz"))
        for strategy, name in (("one_device", "one"), ("mirrored", "two"))
    ]  # side by side: same results
    one, two = (_finish(run) for run in runs)
    assert one["replicas"] == 1 and two["replicas"] == 2
    # Summation order differs between one device and two replicas; Adam turns those last-bit
    # differences in near-zero gradients into steps of up to the learning rate (2e-3), so after
    # 78 steps weights agree to ~1e-4 (measured 0.7-1.4e-4). A real divergence is far larger:
    # clipping each replica's gradient before the all-reduce (what training/optimizers.py's
    # _ClipAfterAllReduce prevents) gave 0.05.
    for a, b in zip(_weights(tmp_path / "one.initial.npz"), _weights(tmp_path / "two.initial.npz")):
        np.testing.assert_array_equal(a, b, err_msg="the two runs started from different weights")
    for a, b in zip(_weights(tmp_path / "one.npz"), _weights(tmp_path / "two.npz")):
        np.testing.assert_allclose(a, b, atol=5e-4, err_msg="same start, different training")
    np.testing.assert_allclose(one["test_loss"], two["test_loss"], rtol=1e-4)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _train_two_workers(tmp_path, output):
    """Runs the two workers; returns `(results, None)`, or `(None, logs)` when one failed."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = [
        _run(
            tmp_path,
            "multi_worker",
            output,
            str(tmp_path / f"w{i}.npz"),
            json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        )
        for i in range(2)
    ]
    try:
        for w in workers:
            w.wait(timeout=600)
    finally:
        for w in workers:  # never leave a worker waiting on its peer
            if w.poll() is None:
                w.kill()
    if any(w.returncode for w in workers):
        return None, "\n\n".join(f"worker {i}:\n{open(w.logs[1].name).read()[-2000:]}" for i, w in enumerate(workers))
    return [_finish(w) for w in workers], None


def test_two_workers_train_together_to_identical_weights(tmp_path):
    output = str(tmp_path / "run")  # one output, as on a shared file system: the chief writes it
    results, logs = _train_two_workers(tmp_path, output)
    if results is None and "UNAVAILABLE" in logs:
        # Seen once in ~10 runs on a 2-core CI machine: the gRPC link between the two local
        # workers dropped ("Socket closed") mid-fit. A transport failure, not a result: run again
        # on fresh ports, once. Any other failure fails here.
        results, logs = _train_two_workers(tmp_path, output + "_again")
        output += "_again"
    assert results is not None, logs
    assert [r["replicas"] for r in results] == [2, 2]
    first, second = _weights(tmp_path / "w0.npz"), _weights(tmp_path / "w1.npz")
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert results[0]["test_top1"] == results[1]["test_top1"] > 0.2  # it learned, together
    assert os.path.exists(os.path.join(output, "model.keras")) and "fit_seconds" in results[0]
    assert "fit_seconds" not in results[1]  # the second worker wrote no run files
