"""Multi-device checks run in their own processes by ``test_sharding.py``.

The pytest process keeps its single CPU device; this script forces several before JAX
computes anything:

    python tests/sharding_worker.py parallel OUT_DIR            # 8 CPU devices, one process
    python tests/sharding_worker.py distributed OUT_DIR ID PORT [--crash-at N] [--heartbeat S]  # process ID of 2 x 4
    python tests/sharding_worker.py detection OUT_DIR [S ...]   # how long a killed peer takes to notice

``parallel`` writes ``results.json`` (one entry per check, with the measured numbers), the
data-parallel params as ``params8.npz`` and a checkpoint written from 8 devices under
``ckpt8/``. ``distributed`` trains with ``fit`` over the 8 devices of two processes joined by
``jax.distributed`` and checkpoints every step under ``OUT_DIR/ckpt``; process 0 writes
``params_distributed.npz``. ``detection`` starts such a pair once per heartbeat timeout ``S``
(seconds, ``jax.distributed.initialize(heartbeat_timeout_seconds=S)``; default 100, JAX's own, and
10), kills process 1 at step 3 and prints how long process 0 ran on and how it ended: the figures
of the multi-host paragraph of docs/guides/distributed.md. The model, data and loss are defined here once and
imported by the test for its single-device reference run.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

D, H, V, T, B = 3, 8, 5, 6, 16  # B: a multiple of 8
STEPS = 5
LR = 1e-2
DROPOUT = 0.3


def model(seed: int = 0):
    """A two-layer LSTM stack with learned initial states, and a dense head."""
    import jax

    import recurrax

    k_stack, k_head = jax.random.split(jax.random.key(seed))
    return {
        "stack": recurrax.init_stack(k_stack, D, [H, H], learned_initial=True),
        "head": recurrax.init_dense(k_head, H, V),
    }


def loss(params, batch, key):
    """Cross-entropy of the stack with dropout between its layers."""
    import recurrax

    xs, targets = batch
    _, hs = recurrax.stack(params["stack"], xs, dropout_rate=DROPOUT, key=key)
    return recurrax.sequence_cross_entropy(recurrax.dense(params["head"], hs), targets)


def mse_loss(params, batch, key):
    """Mean squared error: no integer targets, so no runtime range check."""
    import jax.numpy as jnp

    import recurrax

    xs, targets = batch
    _, hs = recurrax.stack(params["stack"], xs, dropout_rate=DROPOUT, key=key)
    return jnp.mean((recurrax.dense(params["head"], hs) - targets) ** 2)


def batch(step: int):
    """The global batch of a step: the same on every process, whatever the device count."""
    import jax

    key = jax.random.fold_in(jax.random.key(42), step)
    return (jax.random.normal(key, (B, T, D)),
            jax.random.randint(jax.random.fold_in(key, 1), (B, T), 0, V))


def optimizer():
    import recurrax

    return recurrax.default_optimizer(LR)


def initial_state():
    import jax

    import recurrax

    return recurrax.init_train_state(model(), optimizer(), jax.random.key(1))


def tbptt_model_step(params, carries, x):
    import recurrax

    carries, h = recurrax.stack_step(params["stack"], carries, x)
    return carries, recurrax.dense(params["head"], h)


def tbptt_step_loss(logits, target):
    import jax.numpy as jnp

    return jnp.mean((logits - target) ** 2, axis=-1)


def tbptt_stream(chunk: int):
    import jax

    key = jax.random.fold_in(jax.random.key(7), chunk)
    return (jax.random.normal(key, (B, 8, D)), jax.random.normal(jax.random.fold_in(key, 1), (B, 8, V)))


def flat(tree) -> dict:
    """``{path: numpy array}`` of a pytree (for ``np.savez``)."""
    import jax
    import numpy as np

    return {jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def max_diff(a, b) -> float:
    import jax
    import numpy as np

    def host(leaf):
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        return np.asarray(jax.random.key_data(leaf) if is_key else leaf, np.float64)

    return max(float(np.max(np.abs(host(x) - host(y)), initial=0.0)) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --------------------------------------------------------------------------- 8 devices, one process


def parallel(out: pathlib.Path) -> None:
    import jax

    jax.config.update("jax_num_cpu_devices", 8)
    import jax.numpy as jnp
    import numpy as np

    import recurrax
    from recurrax.training import _sharding

    results: dict = {}
    started = time.perf_counter()
    assert len(jax.devices()) == 8, jax.devices()
    mesh = _sharding.data_mesh()
    opt = optimizer()

    # 1. Five steps on 8 devices against five on one (a learned initial state and dropout).
    one = recurrax.make_train_step(loss, opt)
    eight = recurrax.make_train_step(loss, opt, mesh=mesh)
    s1 = s8 = initial_state()
    losses = []
    for step in range(STEPS):
        s1, m1 = one(s1, batch(step))
        s8, m8 = eight(s8, batch(step))
        losses.append((float(m1["loss"]), float(m8["loss"])))
    results["train_step"] = {
        "params_diff": max_diff(s1.params, s8.params),
        "opt_state_diff": max_diff(s1.opt_state, s8.opt_state),
        "loss_diff": max(abs(a - b) for a, b in losses),
        "steps": int(s8.step),
        "params_sharding": sorted({str(leaf.sharding.spec) for leaf in jax.tree.leaves(s8.params)}),
        "params_devices": sorted({len(leaf.sharding.device_set) for leaf in jax.tree.leaves(s8.params)}),
    }
    np.savez(out / "params8.npz", **flat(s8.params))

    # 2. The same with fit (the step places each batch itself); and on 2 and 4 devices.
    fitted = recurrax.fit(initial_state(), eight, batch, num_steps=STEPS, progress=False).state
    others = {}
    for n in (2, 4):
        step_n = recurrax.make_train_step(loss, opt, mesh=_sharding.data_mesh(n))
        others[n] = recurrax.fit(initial_state(), step_n, batch, num_steps=STEPS, progress=False).state
    results["fit"] = {
        "params_diff": max_diff(s1.params, fitted.params),
        "device_counts_diff": max(max_diff(s1.params, state.params) for state in others.values()),
    }

    # 3. Dropout's mask over a batch split on 8 devices is the one-device mask.
    xs = batch(0)[0]
    on_one = recurrax.dropout(jax.random.key(3), xs, DROPOUT)
    on_eight = jax.jit(recurrax.dropout, static_argnums=2)(
        jax.random.key(3), _sharding.shard_batch(xs, mesh), DROPOUT)
    results["dropout"] = {"equal": bool(np.array_equal(np.asarray(on_one), np.asarray(on_eight))),
                          "sharding": str(on_eight.sharding.spec)}

    # 4. The compiled step: the gradient all-reduce is there, and nothing batch-sized leaves
    #    the devices (the cross-entropy's only callback is its range check on min and max).
    def callbacks(text):
        return [line for line in text.splitlines() if "custom-call" in line and "callback" in line]

    mse_step = recurrax.make_train_step(mse_loss, opt, mesh=mesh)
    mse_batch = (batch(0)[0], jnp.zeros((B, T, V)))
    mse_hlo = mse_step.lower(initial_state(), mse_batch).compile().as_text()
    ce_hlo = eight.lower(initial_state(), batch(0)).compile().as_text()
    ce_callbacks = callbacks(ce_hlo)
    results["hlo"] = {
        "all_reduce": mse_hlo.count("all-reduce(") + mse_hlo.count("all-reduce-start("),
        "mse_callbacks": len(callbacks(mse_hlo)),
        "transfers": sum(mse_hlo.count(op) for op in (" send(", " recv(", " infeed(", " outfeed(")),
        "ce_callbacks": len(ce_callbacks),
        "ce_callback_operands_scalar": all("operand_layout_constraints={s32[], s32[]}" in line
                                           for line in ce_callbacks),
        "all_gather": mse_hlo.count("all-gather"),
    }

    # 5. TBPTT over a sharded stream: three chunks, the carry kept sharded between calls.
    tb_opt = optimizer()
    tb_one = recurrax.make_tbptt_train_step(tbptt_model_step, tbptt_step_loss, tb_opt, k1=2, k2=4)
    tb_eight = recurrax.make_tbptt_train_step(tbptt_model_step, tbptt_step_loss, tb_opt, k1=2, k2=4,
                                              mesh=mesh)
    params = model()
    state1 = state8 = recurrax.init_train_state(params, tb_opt, jax.random.key(2))
    carry1 = carry8 = recurrax.stack_initial_carries(params["stack"], (B,))
    carry_specs = set()
    for chunk in range(3):
        state1, carry1, m1 = tb_one(state1, carry1, tbptt_stream(chunk))
        state8, carry8, m8 = tb_eight(state8, carry8, tbptt_stream(chunk))
        carry_specs |= {str(leaf.sharding.spec) for leaf in jax.tree.leaves(carry8)}
    results["tbptt"] = {
        "params_diff": max_diff(state1.params, state8.params),
        "carry_diff": max_diff(carry1, carry8),
        "loss_diff": max_diff(m1["loss"], m8["loss"]),
        "carry_specs": sorted(carry_specs),
        "updates": int(state8.step),
    }

    # 6. Clear errors.
    errors = {}
    for name, call in {
        "indivisible": lambda: eight(initial_state(), (batch(0)[0][:12], batch(0)[1][:12])),
        "no_axis": lambda: recurrax.make_train_step(loss, opt, mesh=jax.make_mesh((8,), ("batch",))),
        "tbptt_carry": lambda: tb_eight(state8, recurrax.stack_initial_carries(params["stack"], (4,)),
                                        (jnp.zeros((4, 8, D)), jnp.zeros((4, 8, V)))),
    }.items():
        try:
            call()
            errors[name] = None
        except ValueError as error:
            errors[name] = str(error)
    results["errors"] = errors

    # 7. An Explicit-axes mesh (jax.make_mesh's default) gives the same step, also when the
    #    caller has made it the context mesh; so does a two-axis mesh (params replicated on both).
    explicit = jax.make_mesh((8,), ("data",))
    ex_step = recurrax.make_train_step(loss, opt, mesh=explicit)
    state = initial_state()
    with jax.set_mesh(explicit):
        for step in range(STEPS):
            state, _ = ex_step(state, batch(step))
    two_axes = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    two_axes_step = recurrax.make_train_step(loss, opt, mesh=two_axes)
    state2 = initial_state()
    for step in range(STEPS):
        state2, _ = two_axes_step(state2, batch(step))
    results["explicit_mesh"] = {"params_diff": max_diff(s1.params, state.params),
                                "axis_types": str(explicit.axis_types),
                                "two_axes_diff": max_diff(s1.params, state2.params)}

    # 8. Checkpoints: written from 8 devices, restored onto 1 and onto 8; and 1 -> 8.
    ckpt8 = out / "ckpt8"
    recurrax.save_checkpoint(ckpt8, s8)
    like = initial_state()
    on_one = recurrax.restore_checkpoint(ckpt8, jax.device_put(like, jax.devices()[0]))
    on_eight = recurrax.restore_checkpoint(ckpt8, _sharding.replicate(like, mesh))
    ckpt1 = out / "ckpt1"
    recurrax.save_checkpoint(ckpt1, jax.device_put(s1, jax.devices()[0]))
    one_to_eight = recurrax.restore_checkpoint(ckpt1, _sharding.replicate(like, mesh))
    resumed, _ = eight(on_eight, batch(STEPS))
    reference, _ = one(s1, batch(STEPS))
    mismatch = None
    try:
        recurrax.restore_checkpoint(ckpt8, recurrax.init_train_state(
            {"stack": recurrax.init_stack(jax.random.key(0), D, [H], learned_initial=True),
             "head": recurrax.init_dense(jax.random.key(1), H, V)}, opt, jax.random.key(1)))
    except recurrax.CheckpointError as error:
        mismatch = str(error)
    results["checkpoint"] = {
        "8_to_1_diff": max_diff(s8, on_one),
        "8_to_8_diff": max_diff(s8, on_eight),
        "1_to_8_diff": max_diff(s1, one_to_eight),
        "8_to_1_devices": sorted({len(leaf.sharding.device_set) for leaf in jax.tree.leaves(on_one)}),
        "8_to_8_devices": sorted({len(leaf.sharding.device_set) for leaf in jax.tree.leaves(on_eight)}),
        "1_to_8_devices": sorted({len(leaf.sharding.device_set) for leaf in jax.tree.leaves(one_to_eight)}),
        "key_equal": bool(np.array_equal(jax.random.key_data(s8.key), jax.random.key_data(on_one.key))),
        "resumed_diff": max_diff(reference.params, resumed.params),
        "mismatch": mismatch,
    }
    # 9. Not training: generation and beam search on a batch split over 8 devices, and
    #    esn.sweep's grid spread over them, against the same calls on one device.
    table = jax.random.normal(jax.random.key(5), (V, D))
    first = jax.random.randint(jax.random.key(6), (B,), 0, V)

    def sample(p, first, key):
        return recurrax.generate(p["stack"], p["head"], lambda t: table[t], first, 7, key=key)

    def beam(p, first):
        def step_fn(carries, token):
            carries, h = recurrax.stack_step(p["stack"], carries, table[token])
            return carries, recurrax.dense(p["head"], h)

        state = recurrax.stack_initial_carries(p["stack"], (first.shape[0],))
        return recurrax.decoding.decode(step_fn, state, first, max_length=6, eos_id=2, strategy="beam",
                                        beam_width=3, pad_id=0, sos_id=1)

    device0 = jax.devices()[0]
    p1, first1 = jax.device_put((params, first), device0)
    p8, first8 = _sharding.replicate(params, mesh), _sharding.shard_batch(first, mesh)
    g1, g8 = jax.jit(sample)(p1, first1, jax.random.key(8)), jax.jit(sample)(p8, first8, jax.random.key(8))
    b1, b8 = jax.jit(beam)(p1, first1), jax.jit(beam)(p8, first8)
    series = jnp.sin(jnp.linspace(0.0, 20.0, 300))[:, None]
    grid = {"hidden_size": 20, "spectral_radii": [0.5, 0.9, 1.1], "leak_rates": [0.3, 1.0], "ridges": [1e-6, 1e-3]}
    sweep_args = (jax.random.split(jax.random.key(9), 2), series[:200], series[1:201], series[200:-1], series[201:])
    sweep1 = recurrax.esn.sweep(*sweep_args, **grid)
    sweep8 = recurrax.esn.sweep(*sweep_args, mesh=mesh, **grid)
    results["inference"] = {
        "generate_tokens_equal": bool(np.array_equal(g1.tokens, g8.tokens)),
        "generate_logits_diff": max_diff(g1.logits, g8.logits),
        "generate_spec": str(g8.tokens.sharding.spec),
        "beam_tokens_equal": bool(np.array_equal(b1.tokens, b8.tokens)),
        "beam_lengths_equal": bool(np.array_equal(b1.lengths, b8.lengths)),
        "beam_scores_diff": max_diff(b1.scores, b8.scores),
        "beam_devices": len(b8.tokens.sharding.device_set),
        "sweep_shape": list(sweep8.errors.shape),
        "sweep_relative_diff_per_ridge": np.max(np.abs(sweep8.errors - sweep1.errors) / np.abs(sweep1.errors),
                                                axis=(0, 1, 2)).tolist(),
    }
    results["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=1))


# --------------------------------------------------------------------------- two processes


def distributed(out: pathlib.Path, process_id: int, port: int, crash_at: int = 0, heartbeat: int = 10) -> None:
    import jax

    jax.config.update("jax_num_cpu_devices", 4)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
        coordinator_bind_address=f"127.0.0.1:{port}", heartbeat_timeout_seconds=heartbeat,
        initialization_timeout=60,
    )
    import numpy as np

    import recurrax
    from recurrax.training import _sharding

    assert jax.process_count() == 2 and len(jax.devices()) == 8 and len(jax.local_devices()) == 4
    mesh = _sharding.data_mesh()
    step = recurrax.make_train_step(loss, optimizer(), mesh=mesh)
    state = initial_state()
    ckpt = out / "ckpt"
    if recurrax.checkpoint_steps(ckpt):
        state = recurrax.restore_checkpoint(ckpt, _sharding.replicate(state, mesh))
    print(f"process {process_id} starts at step {int(state.step)}", flush=True)

    def batches(i):
        if crash_at and i == crash_at and process_id == 1:
            os.kill(os.getpid(), 9)  # a fault mid-run: this process dies without a word
        if crash_at and i >= crash_at:
            time.sleep(1)  # the survivor slows down so the crash happens mid-run
        return batch(i)

    result = recurrax.fit(state, step, batches, num_steps=STEPS - int(state.step), progress=False,
                          checkpoint_dir=ckpt, checkpoint_every=1)
    if process_id == 0:
        np.savez(out / "params_distributed.npz", **flat(result.state.params))
    print(f"process {process_id} done at step {int(result.state.step)}", flush=True)
    jax.distributed.shutdown()


def _option(name: str, default: int) -> int:
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def start_pair(out: pathlib.Path, *extra: str) -> tuple[list, list]:
    """Processes 0 and 1 of a two-process run on a free local port, and their logs in ``out``."""
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs, logs = [], [out / f"process{i}-{port}.log" for i in range(2)]
    for i, log in enumerate(logs):
        with open(log, "w") as stream:
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "distributed", str(out), str(i), port, *extra],
                env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=stream, stderr=subprocess.STDOUT,
                start_new_session=True))
    return procs, logs


def detection(out: pathlib.Path, heartbeats: list) -> None:
    import signal
    import tempfile

    print("| heartbeat_timeout_seconds | survivor ran on after its peer died | survivor's end |")
    print("|---|---|---|")
    for heartbeat in heartbeats:
        run_dir = pathlib.Path(tempfile.mkdtemp(dir=out))
        procs, _ = start_pair(run_dir, "--crash-at", "3", "--heartbeat", str(heartbeat))
        procs[1].wait(timeout=600)
        died = time.monotonic()
        code = procs[0].wait(timeout=600)
        end = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        print(f"| {heartbeat} | {time.monotonic() - died:.1f} s | {end} |", flush=True)


if __name__ == "__main__":
    mode, directory = sys.argv[1], pathlib.Path(sys.argv[2])
    if mode == "parallel":
        parallel(directory)
    elif mode == "distributed":
        distributed(directory, int(sys.argv[3]), int(sys.argv[4]), _option("--crash-at", 0), _option("--heartbeat", 10))
    elif mode == "detection":
        detection(directory, [int(v) for v in sys.argv[3:]] or [100, 10])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
