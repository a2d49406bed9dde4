"""Data parallelism on a mesh: equal to one device, sharded checkpoints, two processes, a fault.

The multi-device runs happen in child processes (``sharding_worker.py``) that force 8 CPU
devices (or join two processes of 4 with ``jax.distributed``) before JAX computes anything;
this process keeps its single device and computes the one-device references.
"""

import contextlib
import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sharding_worker as worker

import recurrax
from recurrax.training import _sharding

# The slow tier (see tests/slow_tests.txt): the tests share 8-device and multi-process workers.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "sharding_worker.py")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}  # and the suite's compilation cache (tests/conftest.py)


@pytest.fixture(autouse=True)
def standard_promotion():
    with jax.numpy_dtype_promotion("standard"):  # optax's arithmetic under the strict suite
        yield


def _tail(path: pathlib.Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join([line for line in text.splitlines() if "[Gloo]" not in line][-lines:])


@functools.lru_cache(maxsize=1)
def _one_device_run() -> recurrax.TrainState:
    step = recurrax.make_train_step(worker.loss, worker.optimizer())
    return recurrax.fit(worker.initial_state(), step, worker.batch, num_steps=worker.STEPS, progress=False).state


def _load(path: pathlib.Path) -> dict:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


# --------------------------------------------------------------------------- 8 devices in one process


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    """Run ``sharding_worker.py parallel`` once: its results, and its output directory."""
    out = tmp_path_factory.mktemp("parallel")
    log = out / "log.txt"
    with open(log, "w") as stream:
        try:
            rc = subprocess.run([sys.executable, WORKER, "parallel", str(out)], check=False, cwd=ROOT, env=ENV,
                                stdout=stream, stderr=subprocess.STDOUT, timeout=240).returncode
        except subprocess.TimeoutExpired:
            pytest.fail(f"the 8-device worker still running after 240 s:\n{_tail(log)}")
    assert rc == 0, f"the 8-device worker failed (exit {rc}):\n{_tail(log)}"
    return json.loads((out / "results.json").read_text()), out


def test_eight_devices_equal_one_after_five_steps(parallel):
    # A two-layer LSTM stack with learned initial states and dropout: 5 Adam steps on a batch
    # split over 8 devices against 5 on one device (in the worker) and on this process's device.
    results, out = parallel
    train = results["train_step"]
    assert train["steps"] == worker.STEPS
    assert train["params_diff"] < 1e-6 and train["opt_state_diff"] < 1e-6 and train["loss_diff"] < 1e-6
    assert train["params_sharding"] == ["P()"] and train["params_devices"] == [8]  # replicated
    reference = worker.flat(_one_device_run().params)
    got = _load(out / "params8.npz")
    assert reference.keys() == got.keys()
    for name in reference:
        np.testing.assert_allclose(got[name], reference[name], atol=1e-6, rtol=0, err_msg=name)


def test_fit_and_other_device_counts(parallel):
    results, _ = parallel
    assert results["fit"]["params_diff"] < 1e-6  # fit drives the data-parallel step unchanged
    assert results["fit"]["device_counts_diff"] < 1e-6  # 2 and 4 devices


def test_dropout_mask_does_not_depend_on_the_device_count(parallel):
    results, _ = parallel
    assert results["dropout"] == {"equal": True, "sharding": "P('data',)"}


def test_compiled_step_all_reduces_gradients_without_host_transfers(parallel):
    hlo = parallel[0]["hlo"]
    assert hlo["all_reduce"] >= 1  # inserted by XLA, not written by recurrax
    assert hlo["all_gather"] == 0  # activations stay split (no gather of the batch)
    assert hlo["mse_callbacks"] == 0 and hlo["transfers"] == 0
    # The cross-entropy's only callback is its runtime range check, on two scalars (min, max).
    assert hlo["ce_callbacks"] == 1 and hlo["ce_callback_operands_scalar"]


def test_tbptt_over_a_sharded_stream_equals_one_device(parallel):
    tbptt = parallel[0]["tbptt"]
    assert tbptt["updates"] == 12  # 3 chunks of 8 steps, k1 = 2
    assert tbptt["params_diff"] < 1e-6 and tbptt["carry_diff"] < 1e-6 and tbptt["loss_diff"] < 1e-6
    assert tbptt["carry_specs"] == ["P('data',)"]  # the carry stays split between calls


def test_explicit_axes_mesh_gives_the_same_step(parallel):
    explicit = parallel[0]["explicit_mesh"]
    assert explicit["axis_types"] == "(Explicit,)" and explicit["params_diff"] < 1e-6
    assert explicit["two_axes_diff"] < 1e-6  # a ("data", "model") mesh: batch split 4 ways


def test_clear_errors_on_eight_devices(parallel):
    errors = parallel[0]["errors"]
    assert "divisible by the 8 devices of mesh axis 'data'" in errors["indivisible"]
    assert "batch[0] of shape (12, 6, 3)" in errors["indivisible"]
    assert "Expected a mesh with a 'data' axis" in errors["no_axis"] and "('batch',)" in errors["no_axis"]
    assert "carry[0].h of shape (4, 8)" in errors["tbptt_carry"]


def test_sharded_checkpoint_restores_onto_one_and_eight_devices(parallel):
    ckpt = parallel[0]["checkpoint"]
    assert ckpt["8_to_1_diff"] == 0.0 and ckpt["8_to_8_diff"] == 0.0 and ckpt["1_to_8_diff"] == 0.0
    assert ckpt["8_to_1_devices"] == [1] and ckpt["8_to_8_devices"] == [8] and ckpt["1_to_8_devices"] == [8]
    assert ckpt["key_equal"] and ckpt["resumed_diff"] < 1e-6
    assert "written for a different model or optimiser" in ckpt["mismatch"]


def test_generate_beam_search_and_esn_sweep_on_eight_devices(parallel):
    inference = parallel[0]["inference"]
    # A batch split over 8 devices: the same sampled tokens (the key's draws do not depend on the
    # sharding) and the same beams, the outputs still split by rows.
    assert inference["generate_tokens_equal"] and inference["generate_logits_diff"] < 1e-6
    assert inference["generate_spec"] == "P('data',)"
    assert inference["beam_tokens_equal"] and inference["beam_lengths_equal"]
    assert inference["beam_scores_diff"] < 1e-5 and inference["beam_devices"] == 8
    # sweep's 12 grid points dealt out to 8 devices: float32 state round-off, amplified by the
    # readout at the small ridge (the tolerances of test_reservoir's one-by-one comparison).
    assert inference["sweep_shape"] == [2, 3, 2, 2]
    small_ridge, large_ridge = inference["sweep_relative_diff_per_ridge"]
    assert small_ridge < 5e-4 and large_ridge < 2e-5


def test_checkpoint_from_eight_devices_restores_in_a_one_device_process(parallel):
    _, out = parallel
    restored = recurrax.restore_checkpoint(out / "ckpt8", worker.initial_state())
    assert int(restored.step) == worker.STEPS
    saved = _load(out / "params8.npz")
    for name, leaf in worker.flat(restored.params).items():
        np.testing.assert_array_equal(leaf, saved[name], err_msg=name)
    chex.assert_trees_all_close(restored.params, _one_device_run().params, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- one device, this process


def test_one_device_mesh_equals_plain_step():
    plain = recurrax.make_train_step(worker.loss, worker.optimizer())
    meshed = recurrax.make_train_step(worker.loss, worker.optimizer(), mesh=_sharding.data_mesh(1))
    a = b = worker.initial_state()
    for step in range(2):
        a, ma = plain(a, worker.batch(step))
        b, mb = meshed(b, worker.batch(step))
    chex.assert_trees_all_close(a.params, b.params, atol=1e-7, rtol=0)
    np.testing.assert_allclose(ma["loss"], mb["loss"], atol=1e-7)


def test_mesh_errors():
    opt = worker.optimizer()
    with pytest.raises(ValueError, match=r"Expected a mesh with a 'data' axis .* got axes \('rows',\)"):
        recurrax.make_train_step(worker.loss, opt, mesh=jax.make_mesh((1,), ("rows",)))
    with pytest.raises(ValueError, match="Expected mesh to be a jax.sharding.Mesh"):
        recurrax.make_tbptt_train_step(worker.tbptt_model_step, worker.tbptt_step_loss, opt, k1=1, k2=1,
                                       mesh="data")
    with pytest.raises(ValueError, match="mesh= needs jit=True"):
        recurrax.make_train_step(worker.loss, opt, mesh=_sharding.data_mesh(), jit=False)
    with pytest.raises(ValueError, match="Expected num_devices between 1 and the 1 available devices, got 2"):
        _sharding.data_mesh(2)
    series = jnp.ones((20, 1))
    with pytest.raises(ValueError, match=r"Expected a mesh with a 'data' axis"):
        recurrax.esn.sweep([jax.random.key(0)], series, series, series, series, hidden_size=4, spectral_radii=[0.9],
                           leak_rates=[1.0], ridges=[1e-3], mesh=jax.make_mesh((1,), ("rows",)))
    step = recurrax.make_train_step(worker.loss, opt, mesh=jax.make_mesh((1,), ("rows",)), axis="rows")
    with pytest.raises(ValueError, match=r"scalar at batch\[1\]"):
        step(worker.initial_state(), (jnp.ones((2, 3, worker.D)), jnp.int32(0)))


# --------------------------------------------------------------------------- two processes


@contextlib.contextmanager
def _two_processes(out: pathlib.Path, *extra: str):
    """Start processes 0 and 1 of a ``jax.distributed`` run; kill whatever is left on exit."""
    procs, logs = [], []
    try:
        procs, logs = worker.start_pair(out, *extra)
        yield procs, logs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait(procs, logs, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    codes = []
    for proc, log in zip(procs, logs):
        try:
            codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"process {procs.index(proc)} still running after {timeout} s:\n{_tail(log)}")
    return codes


def test_two_processes_train_like_one(tmp_path):
    # Two local processes with 4 CPU devices each, joined by jax.distributed (gloo collectives):
    # fit over the 8-device mesh, checkpointing every step, ends where one process does.
    with _two_processes(tmp_path) as (procs, logs):
        codes = _wait(procs, logs, timeout=100)
    assert codes == [0, 0], "\n".join(_tail(log) for log in logs)
    got = _load(tmp_path / "params_distributed.npz")
    for name, leaf in worker.flat(_one_device_run().params).items():
        np.testing.assert_allclose(got[name], leaf, atol=1e-6, rtol=0, err_msg=name)
    assert recurrax.checkpoint_steps(tmp_path / "ckpt") == list(range(1, worker.STEPS + 1))


def test_killed_process_stops_its_peer_and_the_run_resumes(tmp_path):
    # Process 1 dies (SIGKILL) when about to take step 3; the survivor is aborted (SIGABRT) by the
    # coordination service once the heartbeat times out: heartbeat_timeout_seconds=10, as
    # docs/guides/distributed.md advises, measured 9.5 s (JAX's default 100: 63 s). The checkpoint
    # of step 3 is intact, and a restarted pair resumes there and ends where one process does.
    with _two_processes(tmp_path, "--crash-at", "3", "--heartbeat", "10") as (procs, logs):
        killed = procs[1].wait(timeout=100)
        died = time.monotonic()
        survivor = _wait(procs[:1], logs[:1], timeout=60)[0]
        bound = time.monotonic() - died
    assert killed == -signal.SIGKILL, _tail(logs[1])
    assert survivor == -signal.SIGABRT and bound < 30, f"exit {survivor} after {bound:.0f} s:\n{_tail(logs[0])}"
    assert recurrax.checkpoint_steps(tmp_path / "ckpt") == [1, 2, 3]
    last = recurrax.restore_checkpoint(tmp_path / "ckpt", worker.initial_state())  # digest checked
    assert int(last.step) == 3
    with _two_processes(tmp_path) as (procs, logs):
        codes = _wait(procs, logs, timeout=100)
    assert codes == [0, 0], "\n".join(_tail(log) for log in logs)
    assert "starts at step 3" in logs[0].read_text()
    got = _load(tmp_path / "params_distributed.npz")
    for name, leaf in worker.flat(_one_device_run().params).items():
        np.testing.assert_allclose(got[name], leaf, atol=1e-6, rtol=0, err_msg=name)
