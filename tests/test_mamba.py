"""Mamba's selective SSM cell (``recurrax.cells.selective_ssm``) and the Mamba block (``recurrax.blocks.mamba``).

References: mambapy 1.2.0's own outputs, final caches and gradients (``tests/fixtures/mambapy``,
written by ``tests/fixtures/make_mambapy_fixtures.py``), and a float64 NumPy transcription of
one step of each (``tests/reference_mamba.py``). Then the parallel forms against the
sequential scan: ``rnn(method="associative")`` for the cell, ``mamba.sequence`` for the block,
outputs and gradients, with lengths (NaN padding), and the bad inputs.
"""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_mamba as ref

import recurrax
from recurrax.blocks import mamba
from recurrax.blocks._conv import ConvParams
from recurrax.cells import selective_ssm
from recurrax.interop.mambapy import carry_from_mambapy, carry_to_mambapy, from_mambapy, to_mambapy

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mambapy"
D, H, N, T = 3, 4, 5, 7


def _load(name: str) -> dict:
    with np.load(FIXTURES / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


def _state_dict(data: dict, prefix: str = "state_dict.") -> dict:
    return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}


def _close(got, want, tol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.max(np.abs(want))) or 1.0  # relative to the array's largest entry
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale, err_msg=what)


def _normal(rng, shape, dtype, scale=0.5):
    """NumPy draws moved to JAX in ``dtype`` (no XLA program to compile, unlike ``jax.random``)."""
    return jnp.asarray((scale * rng.standard_normal(shape)).astype(dtype))


def _random_ssm(rng, input_size, channels, states, rank, dtype) -> selective_ssm.SelectiveSSMParams:
    """Random selective-SSM params, none at its structured init (A_log = log n, D = 1), so that a
    misplaced term shows; drawn in NumPy."""
    def f(*shape, shift=0.0):
        return jnp.asarray((shift + 0.5 * rng.standard_normal(shape)).astype(dtype))

    return selective_ssm.SelectiveSSMParams(
        w_in=None if input_size == channels else f(input_size, channels),
        w_xproj=f(channels, rank + 2 * states),
        w_dt=f(rank, channels),
        b_dt=f(channels, shift=-0.5),
        A_log=f(channels, states, shift=np.log(np.arange(1, states + 1))),
        D=f(channels, shift=1.0),
    )


def _random_block(rng, input_size, hidden_size, states, width, dtype, expand=2) -> mamba.MambaParams:
    inner = expand * hidden_size
    return mamba.MambaParams(
        w_in=_normal(rng, (input_size, 2 * inner), dtype),
        conv=ConvParams(_normal(rng, (width, inner), dtype), _normal(rng, (inner,), dtype, 0.3)),
        ssm=_random_ssm(rng, inner, inner, states, 2, dtype),
        w_out=_normal(rng, (inner, hidden_size), dtype),
    )


def _random_carry(rng, family, params, batch_shape):
    shapes = jax.eval_shape(lambda: family.initial_carry(params, batch_shape))
    return jax.tree.map(lambda v: _normal(rng, v.shape, v.dtype), shapes)


def _nested_dict(params) -> dict:
    """Params as the transcription reads them: a dict by field name, nested params as dicts."""
    return {k: (None if v is None else _nested_dict(v) if hasattr(v, "_asdict") else np.asarray(v, np.float64))
            for k, v in params._asdict().items()}


# --------------------------------------------------------------------------- mambapy fixtures


@pytest.mark.parametrize("name, tol", [("block_f64", 1e-10), ("block_f32", 1e-5)])
def test_block_matches_mambapy(name, tol):
    data = _load(name)
    x64 = name.endswith("f64")
    with jax.enable_x64(x64):
        layer = from_mambapy(_state_dict(data))
        config = json.loads(str(data["config"]))
        cell = layer.cell
        assert mamba.inner_size(cell) == config["expand_factor"] * config["d_model"]
        assert cell.conv.w.shape[0] == config["d_conv"] and selective_ssm.state_size(cell.ssm) == config["d_state"]
        assert cell.w_in.dtype == (jnp.float64 if x64 else jnp.float32)
        xs, w = jnp.asarray(data["x"]), jnp.asarray(data["w"])

        def loss(p, x):
            _, ys = mamba.sequence(p, x)
            return jnp.sum(ys * w), ys

        (_, ys), (g_params, g_x) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(cell, xs)
        _close(ys, data["y"], tol, "outputs of mamba.sequence vs MambaBlock.forward")
        _close(g_x, data["grad.x"], tol, "d loss / d x")
        torch_grads = to_mambapy(g_params)
        assert set(torch_grads) | {"x"} == set(_state_dict(data, "grad."))
        for key, value in torch_grads.items():
            _close(value, data[f"grad.{key}"], tol, f"d loss / d {key}")

        # Step by step through recurrax.rnn: mambapy's step() outputs and its final cache.
        final, ys_step = jax.jit(recurrax.rnn)(layer, xs)
        _close(ys_step, data["y_step"], tol, "rnn outputs vs MambaBlock.step")
        h, inputs = carry_to_mambapy(final)
        _close(h, data["h"], tol, "final h vs the step cache")
        _close(inputs, data["inputs"], tol, "final window vs the step cache's inputs")
        back = carry_to_mambapy(carry_from_mambapy((data["h"], data["inputs"])))
        np.testing.assert_array_equal(back[0], data["h"])
        np.testing.assert_array_equal(back[1], data["inputs"])

    # Export gives back mambapy's state_dict bit for bit.
    for key, value in to_mambapy(layer).items():
        np.testing.assert_array_equal(value, data[f"state_dict.{key}"], err_msg=key)


def _rms_norm(x, weight, eps):
    """mambapy's RMSNorm: ``x / sqrt(mean(x²) + eps) · weight`` over the features."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * jax.lax.broadcast_to_rank(weight, x.ndim)


def test_stack_of_residual_blocks_matches_mambapy_model():
    """mambapy's ``Mamba`` (ResidualBlock: x + block(RMSNorm(x)), twice) from recurrax blocks."""
    data = _load("model_f64")
    config = json.loads(str(data["config"]))
    sd = _state_dict(data)
    with jax.enable_x64(True):
        layers = config["n_layers"]
        blocks = [from_mambapy(sd, prefix=f"layers.{i}.mixer.").cell for i in range(layers)]
        norms = [jnp.asarray(sd[f"layers.{i}.norm.weight"]) for i in range(layers)]
        xs, w = jnp.asarray(data["x"]), jnp.asarray(data["w"])

        def loss(blocks, norms, x):
            for block, norm in zip(blocks, norms):
                x = x + mamba.sequence(block, _rms_norm(x, norm, config.get("rms_norm_eps", 1e-5)))[1]
            return jnp.sum(x * w), x

        (_, ys), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(blocks, norms, xs)
        _close(ys, data["y"], 1e-10, "outputs of the stack vs Mamba.forward")
        g_blocks, g_norms, g_x = grads
        _close(g_x, data["grad.x"], 1e-10, "d loss / d x")
        for i in range(layers):
            _close(g_norms[i], data[f"grad.layers.{i}.norm.weight"], 1e-10, f"d loss / d norm {i}")
            for key, value in to_mambapy(g_blocks[i]).items():
                _close(value, data[f"grad.layers.{i}.mixer.{key}"], 1e-10, f"d loss / d layer {i} {key}")


# --------------------------------------------------------------------------- NumPy transcription


def test_steps_match_numpy_transcription():
    """One step of the cell (with and without in-projection) and of the block, float64, against
    the transcription, example by example, for a batch and for a single example."""
    assert ref.FAMILIES["selective_ssm"][0] == selective_ssm.SelectiveSSMParams.__name__
    assert ref.FAMILIES["mamba"][0] == mamba.MambaParams.__name__
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        cases = {
            "selective_ssm": _random_ssm(rng, D, H, N, 2, np.float64),
            "selective_ssm, D == H": _random_ssm(rng, H, H, N, 1, np.float64),
            "mamba": _random_block(rng, D, H, N, 3, np.float64),
        }
        family_of = {case: mamba if case == "mamba" else selective_ssm for case in cases}
        inputs = {case: _normal(rng, (2, family_of[case].input_size(p)), np.float64, 1.0) for case, p in cases.items()}
        carries = {case: _random_carry(rng, family_of[case], p, (2,)) for case, p in cases.items()}
        assert cases["selective_ssm, D == H"].w_in is None and cases["selective_ssm"].w_in.shape == (D, H)
        for case, params in cases.items():
            family = mamba if case == "mamba" else selective_ssm
            _, carry_shapes, output_size, ref_step = ref.FAMILIES["mamba" if case == "mamba" else "selective_ssm"]
            p = _nested_dict(params)
            assert output_size(p) == family.output_size(params) == H
            xs, carry = inputs[case], carries[case]
            assert {f: v.shape[1:] for f, v in carry._asdict().items()} == carry_shapes(p)
            new, ys = jax.jit(family.step)(params, carry, xs)
            for b in range(2):
                want_carry, want_y = ref_step(p, {f: np.asarray(v[b]) for f, v in carry._asdict().items()},
                                              np.asarray(xs[b]))
                _close(ys[b], want_y, 1e-12, f"{case}: y")
                for f in want_carry:
                    _close(getattr(new, f)[b], want_carry[f], 1e-12, f"{case}: carry.{f}")
            # No batch axes at all: the same numbers as the batch's first example.
            one, y_one = jax.jit(family.step)(params, jax.tree.map(lambda v: v[0], carry), xs[0])
            _close(y_one, ys[0], 1e-14, f"{case}: unbatched y")
            _close(one.state, new.state[0], 1e-14, f"{case}: unbatched state")


# --------------------------------------------------------------------------- parallel forms


def test_associative_scan_equals_sequential_with_lengths_and_gradients():
    """``rnn(method="associative")`` against ``rnn``'s scan, float64: outputs, carries, gradients
    with respect to the params, the inputs and the initial carry; with lengths, NaN at the padded
    steps giving what the scan gives for any other padding."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        layer = recurrax.RNNParams(_random_ssm(rng, D, H, N, 2, np.float64), None, recurrax.cells.as_family(selective_ssm))
        xs, w = _normal(rng, (3, T, D), np.float64, 1.0), _normal(rng, (3, T, H), np.float64, 1.0)
        start = _random_carry(rng, selective_ssm, layer.cell, (3,))
        assert layer.family.is_linear and layer.family.name == "selective_ssm"
        lengths = np.array([T, 4, 1])
        padded = np.arange(T)[None, :, None] >= lengths[:, None, None]
        xs_nan = np.where(padded, np.nan, xs)

        def loss(layer, xs, start, method):
            final, ys = recurrax.rnn(layer, xs, carry=start, lengths=lengths, method=method)
            return jnp.sum(ys * w) + jnp.sum(final.state**2), (final, ys)

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
        (_, (final_s, ys_s)), g_s = grad(layer, xs, start, "scan")
        for inputs in (xs, xs_nan):
            (_, (final_a, ys_a)), g_a = grad(layer, inputs, start, "associative")
            _close(ys_a, ys_s, 1e-12, "outputs")
            _close(final_a.state, final_s.state, 1e-12, "final carry")
            for a, s in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_s)):
                assert np.all(np.isfinite(a))
                _close(a, s, 1e-11, "gradient")
        assert np.all(np.asarray(ys_s)[padded[..., 0]] == 0)  # zero outputs at padded steps

        # The sequence of length 1 ends after its first step, whatever follows; jacobian_diagonal's
        # a = exp(Δ ⊗ A) is the whole Jacobian of h' with respect to h.
        @jax.jit
        def one_step(cell, carry, x):
            new, _ = selective_ssm.step(cell, carry, x)
            jac = jax.jacfwd(lambda h: selective_ssm.step(cell, selective_ssm.SelectiveSSMCarry(h), x)[0].state)(carry.state)
            return new, jac, selective_ssm.jacobian_diagonal(cell, carry, x)

        carry2 = jax.tree.map(lambda v: v[2], start)
        first, jac, (new, diag) = one_step(layer.cell, carry2, xs[2, 0])
        _close(final_s.state[2], first.state, 1e-14, "final carry at length 1")
        _close(np.asarray(jac).reshape(H * N, H * N), np.diag(np.asarray(diag.state).ravel()), 1e-14, "Jacobian = diag(a)")
        _close(new.state, first.state, 0, "jacobian_diagonal's new carry")


def test_block_sequence_equals_stepping():
    """``mamba.sequence`` (associative and sequential) against ``rnn`` stepping the block, from a
    random carry, over two batch axes: outputs, final carries and gradients; and the block with
    lengths and NaN padding through ``rnn``."""
    rng = np.random.default_rng(2)
    layer = recurrax.RNNParams(_random_block(rng, D, H, N, 3, np.float32), None, recurrax.cells.as_family(mamba))
    xs, w = _normal(rng, (2, 2, T, D), np.float32, 1.0), _normal(rng, (2, 2, T, H), np.float32, 1.0)
    start = _random_carry(rng, mamba, layer.cell, (2, 2))

    def loss(cell, xs, start, how):
        if how == "step":
            final, ys = recurrax.rnn(layer._replace(cell=cell), xs, carry=start)
        else:
            final, ys = mamba.sequence(cell, xs, start, method=how)
        return jnp.sum(ys * w) + jnp.sum(final.state) + jnp.sum(final.window), (final, ys)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
    (_, (final_s, ys_s)), g_s = grad(layer.cell, xs, start, "step")
    for how in mamba.SEQUENCE_METHODS:
        (_, (final, ys)), g = grad(layer.cell, xs, start, how)
        _close(ys, ys_s, 1e-5, f"{how}: outputs")
        for f in ("window", "state"):
            _close(getattr(final, f), getattr(final_s, f), 1e-5, f"{how}: final {f}")
        for a, s in zip(jax.tree.leaves(g), jax.tree.leaves(g_s)):
            _close(a, s, 1e-5, f"{how}: gradient")
    # The window after T ≥ conv_width − 1 steps: the last conv_width − 1 inputs u of the conv.
    us = (np.asarray(xs, np.float64) @ np.asarray(layer.cell.w_in, np.float64))[..., : mamba.inner_size(layer.cell)]
    _close(final_s.window, us[..., T - 2:, :], 1e-6, "final window")

    # Lengths: NaN padding gives the same outputs, carries and gradients as zero padding.
    lengths = np.array([[T, 3], [1, 5]])
    padded = np.arange(T)[None, None, :, None] >= lengths[..., None, None]

    def masked_loss(cell, xs):
        final, ys = recurrax.rnn(layer._replace(cell=cell), xs, carry=start, lengths=lengths)
        return jnp.sum(ys * w) + jnp.sum(final.state), (final, ys)

    masked = jax.jit(jax.value_and_grad(masked_loss, argnums=(0, 1), has_aux=True))
    (_, (f0, y0)), g0 = masked(layer.cell, np.where(padded, 0.0, xs).astype(np.float32))
    (_, (f1, y1)), g1 = masked(layer.cell, np.where(padded, np.nan, xs).astype(np.float32))
    for a, b in zip(jax.tree.leaves((f0, y0, g0)), jax.tree.leaves((f1, y1, g1))):
        np.testing.assert_array_equal(a, b)
    _close(y0[0, 0], ys_s[0, 0], 1e-5, "full-length sequence unaffected by the others' lengths")


# --------------------------------------------------------------------------- init and bad inputs


def test_init_follows_mambapy(key):
    @jax.jit
    def inits(key):
        return (selective_ssm.init(key, 40, 40, state_size=N, dt_min=1e-4, dt_max=0.05, dt_floor=1e-3),
                mamba.init(key, D, H, expand=3, state_size=2, conv_width=5))

    params, block = jax.tree.map(np.asarray, inits(key))
    assert params.w_in is None and selective_ssm.dt_rank(params) == math.ceil(40 / 16) == 3
    np.testing.assert_allclose(params.A_log, np.log(np.broadcast_to(np.arange(1, N + 1), (40, N))), rtol=1e-6)
    np.testing.assert_array_equal(params.D, np.ones(40))
    # Δ at init: softplus(b_dt) log-uniform in [dt_min, dt_max], raised to dt_floor where below it.
    dt = np.logaddexp(0, params.b_dt.astype(np.float64))
    assert np.all((dt >= 1e-3 * (1 - 1e-4)) & (dt <= 0.05 * (1 + 1e-5))) and np.ptp(dt) > 0.02
    assert np.any(np.abs(dt / 1e-3 - 1) < 1e-4)  # some floored (each draw: log 10 / log 500 ≈ 0.37)
    assert np.max(np.abs(params.w_dt)) <= 3**-0.5 and np.max(np.abs(params.w_xproj)) <= 40**-0.5
    assert params.w_xproj.shape == (40, 3 + 2 * N)
    assert block.w_in.shape == (D, 24) and block.conv.w.shape == (5, 12) and block.w_out.shape == (12, H)
    assert block.ssm.A_log.shape == (12, 2) and selective_ssm.dt_rank(block.ssm) == 1
    carry = jax.eval_shape(lambda: mamba.initial_carry(block, (2,)))
    assert carry.window.shape == (2, 4, 12) and carry.state.shape == (2, 12, 2)


def test_bad_inputs(key):
    cases = [
        (lambda: selective_ssm.init(key, D, H, state_size=0), "state_size to be a positive integer, got 0"),
        (lambda: selective_ssm.init(key, D, H, dt_rank=0), "dt_rank to be a positive integer, got 0"),
        (lambda: selective_ssm.init(key, D, H, dt_min=0.2, dt_max=0.1), "dt_min <= dt_max"),
        (lambda: selective_ssm.init(key, D, H, dt_floor=0.0), r"dt_floor in \(0, inf\)"),
        (lambda: mamba.init(key, D, H, expand=0), "expand to be a positive integer, got 0"),
        (lambda: mamba.init(key, D, H, expand=1.5), "expand to be a positive integer, got 1.5"),
        (lambda: mamba.init(key, D, H, conv_width=0), "conv_width to be a positive integer, got 0"),
        (lambda: mamba.init(key, D, H, state_size=-1), "state_size to be a positive integer, got -1"),
        (lambda: mamba.init(key, D, H, dt_rank=0), "dt_rank to be a positive integer, got 0"),
        (lambda: mamba.init(key, D, H, dt_minimum=0.1), "got dt_minimum"),
        (lambda: mamba.init(key, 0, H), "input_size to be a positive integer, got 0"),
    ]
    for make, match in cases:
        with pytest.raises(ValueError, match=match):
            make()

    rng = np.random.default_rng(3)
    cell, block = _random_ssm(rng, D, H, N, 1, np.float32), _random_block(rng, D, H, N, 3, np.float32)
    x = jnp.ones((2, D))
    runs = [
        (lambda: selective_ssm.step(cell, selective_ssm.initial_carry(cell, (2,)), jnp.ones((2, H))),
         r"x with last dimension 3 .* got shape \(2, 4\)"),
        (lambda: selective_ssm.step(cell, selective_ssm.SelectiveSSMCarry(jnp.zeros((2, H))), x),
         r"carry.state with shape \(2, 4, 5\) .* got shape \(2, 4\)"),
        (lambda: selective_ssm.step(cell, selective_ssm.initial_carry(cell, (3,)), x),
         r"carry.state with shape \(2, 4, 5\) .* got shape \(3, 4, 5\)"),
        (lambda: selective_ssm.step(cell._replace(D=jnp.ones(H + 1)), selective_ssm.initial_carry(cell, (2,)), x),
         r"params.w_xproj with shape"),
        (lambda: selective_ssm.step(block, selective_ssm.initial_carry(cell, (2,)), x), "expects SelectiveSSMParams"),
        (lambda: mamba.step(block, mamba.initial_carry(block, (2,)), jnp.ones((2, H))),
         r"x with last dimension 3 \(the cell's input_size\), got shape \(2, 4\)"),
        (lambda: mamba.step(block, mamba.initial_carry(block, (3,)), x),
         r"carry.window with shape \(2, 2, 8\) .* got shape \(3, 2, 8\)"),
        (lambda: mamba.step(block, selective_ssm.initial_carry(cell, (2,)), x), "expects a MambaCarry"),
        (lambda: mamba.sequence(block, jnp.ones((D,))), r"xs of rank >= 2, got shape \(3,\)"),
        (lambda: mamba.sequence(block, jnp.ones((2, T, D)), method="scan"), "method in .*'associative'.*got 'scan'"),
        (lambda: mamba.initial_carry(block, 2), r"write \(2,\)"),
        (lambda: recurrax.rnn(recurrax.RNNParams(block, None, recurrax.cells.as_family(mamba)), jnp.ones((2, T, D)),
                              method="associative"),
         "cannot use method='associative'"),
    ]
    for run, match in runs:
        with pytest.raises(ValueError, match=match):
            run()

    sd = to_mambapy(block)
    with pytest.raises(ValueError, match="Missing key 'A_log'"):
        from_mambapy({k: v for k, v in sd.items() if k != "A_log"})
    with pytest.raises(ValueError, match="Unexpected key 'in_proj.bias'.*no in_proj/out_proj biases"):
        from_mambapy({**sd, "in_proj.bias": np.zeros(16, np.float32)})
    with pytest.raises(ValueError, match=r"Key 'D' of .* has shape \(9,\), expected shape \(8,\)"):
        from_mambapy({**sd, "D": np.zeros(9, np.float32)})
    with pytest.raises(ValueError, match="keys starting with 'layers.0.'"):
        from_mambapy(sd, prefix="layers.0.")
    no_bias = from_mambapy({k: v for k, v in sd.items() if k != "conv1d.bias"}).cell  # conv_bias=False
    np.testing.assert_array_equal(no_bias.conv.b, np.zeros(8))
