"""Checkpoints: an interrupted and resumed ``fit`` ends bit-identical to an uninterrupted one;
missing, corrupt and mismatched checkpoints raise ``CheckpointError``, never a fresh start."""

import pathlib
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrax

D, H, V, T, B = 3, 8, 5, 7, 4


@pytest.fixture(autouse=True)
def standard_promotion():
    with jax.numpy_dtype_promotion("standard"):  # optax's arithmetic under the strict suite
        yield


def _state(hidden=H, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"cell": recurrax.lstm.init(k1, D, hidden), "head": recurrax.init_dense(k2, hidden, V)}
    return recurrax.init_train_state(params, recurrax.default_optimizer(1e-2), jax.random.key(seed + 1))


def _loss(params, batch, key):
    # Dropout on the inputs makes the result depend on the restored PRNG key too.
    xs, targets = batch
    xs = recurrax.dropout(key, xs, 0.3)
    _, hs = recurrax.unroll(lambda c, x: recurrax.lstm.step(params["cell"], c, x),
                            recurrax.lstm.initial_carry(params["cell"], (B,)), xs)
    return recurrax.sequence_cross_entropy(recurrax.dense(params["head"], hs), targets)


def _batch(step):
    key = jax.random.fold_in(jax.random.key(42), step)
    return jax.random.normal(key, (B, T, D)), jax.random.randint(jax.random.fold_in(key, 1), (B, T), 0, V)


TRAIN_STEP = recurrax.make_train_step(_loss, recurrax.default_optimizer(1e-2))


class Interrupted(Exception):
    pass


def _assert_bit_identical(a, b):
    chex.assert_trees_all_equal(a.params, b.params)
    chex.assert_trees_all_equal(a.opt_state, b.opt_state)
    assert int(a.step) == int(b.step)
    np.testing.assert_array_equal(jax.random.key_data(a.key), jax.random.key_data(b.key))


@pytest.mark.parametrize("resume_from", [None, 3], ids=["latest", "step-3"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, resume_from):
    uninterrupted = recurrax.fit(_state(), TRAIN_STEP, _batch, num_steps=6, progress=False).state

    def batches_until_crash(step):
        if step == 4:
            raise Interrupted
        return _batch(step)

    with pytest.raises(Interrupted):
        recurrax.fit(_state(), TRAIN_STEP, batches_until_crash, num_steps=6, progress=False,
                     checkpoint_dir=tmp_path, checkpoint_every=3)
    # Step 3 was saved on schedule, step 4 when the run was interrupted.
    assert recurrax.checkpoint_steps(tmp_path) == [3, 4]
    template = _state(seed=7)  # different values: only its structure may be used
    resumed = recurrax.restore_checkpoint(tmp_path, template, step=resume_from)
    assert int(resumed.step) == (resume_from or 4)
    if resume_from is not None:  # continuing from an earlier step would fork the saved history
        with pytest.raises(recurrax.CheckpointError, match="holds checkpoints up to step 4"):
            recurrax.fit(resumed, TRAIN_STEP, _batch, num_steps=1, checkpoint_dir=tmp_path, progress=False)
    result = recurrax.fit(resumed, TRAIN_STEP, _batch, num_steps=6 - int(resumed.step), progress=False,
                          **({} if resume_from else {"checkpoint_dir": tmp_path, "checkpoint_every": 3}))
    _assert_bit_identical(result.state, uninterrupted)
    if resume_from is None:
        assert recurrax.checkpoint_steps(tmp_path) == [3, 4, 6]
        _assert_bit_identical(recurrax.restore_checkpoint(tmp_path, template), uninterrupted)


def test_nan_stop_checkpoints_the_last_finite_state(tmp_path):
    state = _state()

    def batches(step):
        xs, targets = _batch(step)
        return (xs * jnp.nan if step == 2 else xs), targets

    result = recurrax.fit(state, TRAIN_STEP, batches, num_steps=5, progress=False, checkpoint_dir=tmp_path)
    assert "at step 3" in result.stopped
    assert recurrax.checkpoint_steps(tmp_path) == [2]
    _assert_bit_identical(recurrax.restore_checkpoint(tmp_path, state), result.state)


def test_a_time_budget_stops_like_an_interrupt_and_the_run_resumes(tmp_path, monkeypatch):
    import types

    from recurrax.training import _train as _training

    uninterrupted = recurrax.fit(_state(), TRAIN_STEP, _batch, num_steps=6, progress=False).state
    clock = iter(range(100))   # one second per reading: fit reads it at the start and after each step
    monkeypatch.setattr(_training, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    result = recurrax.fit(_state(), TRAIN_STEP, _batch, num_steps=6, progress=False, checkpoint_dir=tmp_path,
                          time_budget=2.5)
    assert result.stopped == "time budget of 2.5 s reached at step 3 (3.0 s)."
    assert int(result.state.step) == 3 and recurrax.checkpoint_steps(tmp_path) == [3]
    resumed = recurrax.restore_checkpoint(tmp_path, _state(seed=7))
    rest = recurrax.fit(resumed, TRAIN_STEP, _batch, num_steps=3, progress=False, checkpoint_dir=tmp_path)
    assert rest.stopped is None
    _assert_bit_identical(rest.state, uninterrupted)
    with pytest.raises(ValueError, match="Expected time_budget to be a positive number of seconds"):
        recurrax.fit(_state(), TRAIN_STEP, _batch, num_steps=1, time_budget=0)


def test_stop_when_sees_the_evaluated_metrics_and_checkpoints(tmp_path):
    seen = []

    def stop_when(record):
        seen.append(sorted(record))
        return record.get("eval_weight_norm", np.inf) < 1e9   # true at the first evaluation

    result = recurrax.fit(_state(), TRAIN_STEP, _batch, num_steps=6, progress=False, checkpoint_dir=tmp_path,
                          eval_fn=lambda p: {"weight_norm": float(optax.tree.norm(p))}, eval_every=2,
                          stop_when=stop_when)
    assert result.stopped == "stop_when was true at step 2."
    assert seen == [["grad_norm", "loss", "step"], ["eval_weight_norm", "grad_norm", "loss", "step"]]
    assert recurrax.checkpoint_steps(tmp_path) == [2] and [r["step"] for r in result.history] == [1, 2]
    with pytest.raises(ValueError, match="Expected stop_when to be a function"):
        recurrax.fit(_state(), TRAIN_STEP, _batch, num_steps=1, stop_when=True)


def test_missing_checkpoints(tmp_path):
    with pytest.raises(recurrax.CheckpointError, match="No checkpoint found in .*nowhere"):
        recurrax.restore_checkpoint(tmp_path / "nowhere", _state())
    recurrax.save_checkpoint(tmp_path, _state())
    with pytest.raises(recurrax.CheckpointError, match=r"No checkpoint for step 5 .* available steps: \[0\]"):
        recurrax.restore_checkpoint(tmp_path, _state(), step=5)


def test_checkpoints_are_never_overwritten_and_max_to_keep(tmp_path):
    state = _state()
    recurrax.save_checkpoint(tmp_path, state)
    with pytest.raises(recurrax.CheckpointError, match="step 0 already exists"):
        recurrax.save_checkpoint(tmp_path, state._replace(params=jax.tree.map(jnp.zeros_like, state.params)))
    _assert_bit_identical(recurrax.restore_checkpoint(tmp_path, state), state)
    for step in (1, 2, 3):
        recurrax.save_checkpoint(tmp_path, state._replace(step=jnp.array(step, jnp.int32)), max_to_keep=2)
    assert recurrax.checkpoint_steps(tmp_path) == [2, 3]
    with pytest.raises(ValueError, match="Expected max_to_keep to be a positive integer or None, got 0"):
        recurrax.save_checkpoint(tmp_path, state, max_to_keep=0)
    with pytest.raises(ValueError, match="checkpoint_every=2 needs a checkpoint_dir"):
        recurrax.fit(state, TRAIN_STEP, _batch, num_steps=2, checkpoint_every=2)
    with pytest.raises(ValueError, match="Expected num_steps with batches given as a function of the step"):
        recurrax.fit(state, TRAIN_STEP, _batch)


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    recurrax.save_checkpoint(tmp_path, _state())
    with pytest.raises(recurrax.CheckpointError,
                       match=r"expected \.params\['cell'\]\.w_x \(3, 40\) float32, the checkpoint has .* \(3, 32\)"):
        recurrax.restore_checkpoint(tmp_path, _state(hidden=10))
    sgd = recurrax.init_train_state(_state().params, optax.sgd(0.1), jax.random.key(0))
    with pytest.raises(recurrax.CheckpointError, match="written for a different model or optimiser"):
        recurrax.restore_checkpoint(tmp_path, sgd)


def _files(directory: pathlib.Path, name_part: str):
    return [p for p in directory.rglob("*") if p.is_file() and name_part in str(p.relative_to(directory))]


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "delete-manifest"])
def test_corrupt_checkpoint_is_an_error(tmp_path, damage):
    state = _state()
    recurrax.save_checkpoint(tmp_path, state)
    if damage == "delete-manifest":
        targets = _files(tmp_path, "manifest/")
    else:  # the array data: the largest files of the state item
        targets = sorted(_files(tmp_path, "state/"), key=lambda p: p.stat().st_size)[-1:]
    assert targets
    for path in targets:
        data = bytearray(path.read_bytes())
        if damage == "flip-byte":
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
        elif damage == "truncate":
            path.write_bytes(bytes(data[: len(data) // 2]))
        else:
            path.unlink()
    with pytest.raises(recurrax.CheckpointError, match="is corrupt"):
        recurrax.restore_checkpoint(tmp_path, state)


FAILED_RESTORES = textwrap.dedent("""
    import asyncio, gc, pathlib, sys, time
    import jax, jax.numpy as jnp
    import recurrax

    # Many leaves: many reads in flight when the first one fails.
    params = {f"w{i}": jnp.full((16, 16), float(i)) for i in range(20)}
    state = recurrax.init_train_state(params, recurrax.default_optimizer(1e-2), jax.random.key(0))
    for attempt in range(8):
        directory = pathlib.Path(sys.argv[1]) / str(attempt)
        recurrax.save_checkpoint(directory, state)
        for path in (directory / "0" / "state" / "d").iterdir():  # truncate every array file
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        try:
            recurrax.restore_checkpoint(directory, state)
        except recurrax.CheckpointError as error:
            print(error)
    time.sleep(0.5)  # time for late callbacks to reach stderr

    class Other:  # unrelated leftovers must still be reported
        def __del__(self):
            raise ValueError("an unrelated error")

    Other()
    loop = asyncio.new_event_loop()
    loop.create_future().set_exception(ValueError("an unrelated future"))
    loop.close()
    gc.collect()
""")


def test_failed_restore_leaves_no_traceback_on_stderr(tmp_path):
    # Before: tensorstore's late reads printed "RuntimeError: Event loop is closed" tracebacks
    # after the CheckpointError. A subprocess, because they arrive after restore_checkpoint returns.
    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", FAILED_RESTORES, str(tmp_path)], capture_output=True, text=True,
                          cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("is corrupt: its arrays cannot be read") == 8
    for leftover in ("Event loop is closed", "Exception ignored in: <coroutine", "exception was never retrieved\n"
                     "future: <Future finished exception=ValueError('OUT_OF_RANGE", "tensorstore"):
        assert leftover not in done.stderr
    assert done.stderr.count("Traceback") == 1 and "ValueError: an unrelated error" in done.stderr
    assert "Future exception was never retrieved" in done.stderr and "ValueError: an unrelated future" in done.stderr
