"""CfC and LTC (``recurrax.cells.cfc``, ``ltc``) against ncps 1.0.1, NumPy transcriptions, and invariants.

References: ``tests/fixtures/ncps/*.npz`` (ncps's ``CfC`` and ``LTC`` modules, float64, written by
``tests/fixtures/make_ncps_fixtures.py``: outputs, final states and gradients of
``sum(y * loss_w)``) and ``tests/reference_cfc.py`` (one step of each in float64 NumPy).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
import reference_cfc
from recurrax.cells import cfc, ltc
from recurrax.interop.ncps import from_ncps, from_ncps_ltc, to_ncps

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ncps"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.npz"))
D, H = 3, 4


def _load(name: str) -> tuple[dict, dict]:
    with np.load(FIXTURES / f"{name}.npz") as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(str(arrays.pop("config"))), arrays


def _perturbed(params: cfc.CfCParams, seed: int) -> cfc.CfCParams:
    """Init plus noise on every array, so zero-initialised or symmetric terms show."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda v: v + jnp.asarray(rng.normal(scale=0.3, size=v.shape), v.dtype), params)


def _as_dicts(params: cfc.CfCParams) -> dict:
    return {
        name: (dataclasses.asdict(value) if name == "config" else None if value is None else np.asarray(value, np.float64))
        for name, value in params._asdict().items()
    }


def test_matches_ncps_fixtures():
    """Outputs, final states and gradients (inputs, h0, every weight) of ncps's CfC and LTC, ≤ 1e-10 in float64."""
    assert len(NAMES) == 10, NAMES
    with jax.enable_x64(True):
        for name in NAMES:
            config, f = _load(name)
            state_dict = {k.removeprefix("state_dict."): v for k, v in f.items() if k.startswith("state_dict.")}
            irregular = config["irregular"]
            if name.startswith("cfc"):
                layer = from_ncps(state_dict, mode=config["mode"], activation=config.get("activation", "lecun_tanh"),
                                  elapsed_time=irregular)
                carry_type, state = cfc.CfCCarry, "h"
            else:
                layer = from_ncps_ltc(state_dict, ode_unfolds=config["ode_unfolds"], elapsed_time=irregular,
                                      implicit_param_constraints=config["implicit_param_constraints"])
                carry_type, state = ltc.LTCCarry, "v"
            assert all(v.dtype == jnp.float64 for v in jax.tree.leaves(layer.cell))
            # ncps's timespans are Δt: append them as the last feature (the regular case has none: Δt = 1).
            xs = np.concatenate([f["x"], f["timespans"][..., None]], -1) if irregular else f["x"]

            def loss(layer, xs, h0):
                carry, ys = recurrax.rnn(layer, xs, carry=carry_type(h0))
                return jnp.sum(ys * f["loss_w"]), (ys, getattr(carry, state))

            grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
            (_, (ys, h_n)), (g_layer, g_xs, g_h0) = grad_fn(layer, jnp.asarray(xs), jnp.asarray(f["h0"]))
            np.testing.assert_allclose(ys, f["y"], rtol=1e-10, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(h_n, f["h_n"], rtol=1e-10, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(g_xs[..., :D], f["grad.x"], rtol=1e-10, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(g_h0, f["grad.h0"], rtol=1e-10, atol=1e-12, err_msg=name)
            g_state_dict = to_ncps(g_layer)
            trained = sorted(k.removeprefix("grad.state_dict.") for k in f if k.startswith("grad.state_dict."))
            assert sorted(k for k in g_state_dict if not k.endswith("sparsity_mask")) == trained, name
            for key in trained:
                np.testing.assert_allclose(g_state_dict[key], f[f"grad.state_dict.{key}"], rtol=1e-10, atol=1e-12,
                                           err_msg=f"{name}: {key}")
            # The round trip through recurrax's layout gives ncps's arrays back, bit for bit.
            exported = to_ncps(layer)
            assert sorted(exported) == sorted(state_dict), name
            for key, value in exported.items():
                np.testing.assert_array_equal(value, state_dict[key], err_msg=f"{name}: {key}")
            if irregular:  # Δt matters: with ncps's default Δt = 1 instead, ncps's outputs are missed
                xs_regular = np.concatenate([f["x"], np.ones_like(f["timespans"])[..., None]], -1)
                _, ys_regular = recurrax.rnn(layer, jnp.asarray(xs_regular), carry=carry_type(jnp.asarray(f["h0"])))
                assert np.abs(np.asarray(ys_regular) - f["y"]).max() > 1e-3, name


def test_matches_numpy_transcription():
    """``step`` against ``reference_cfc.step`` per example: every mode, backbone depth, activation."""
    configs = [
        dict(mode="default", backbone_layers=1),
        dict(mode="no_gate", backbone_layers=0, activation="relu"),
        dict(mode="pure", backbone_layers=2, activation="silu"),
        dict(mode="pure", backbone_layers=0, elapsed_time=False),
        dict(mode="default", backbone_layers=3, activation="gelu"),
        dict(mode="no_gate", backbone_layers=1, activation="tanh", elapsed_time=False),
    ]
    rng = np.random.default_rng(0)
    step = jax.jit(cfc.step)
    with jax.enable_x64(True):
        for seed, options in enumerate(configs):
            params = _perturbed(cfc.init(jax.random.key(seed), D, H, backbone_units=5, dtype=jnp.float64, **options),
                                seed)
            p = _as_dicts(params)
            params_type, carry_shapes, output_size, ref_step = reference_cfc.FAMILIES["cfc"]
            assert params_type == type(params).__name__
            assert output_size(p) == cfc.output_size(params) == H and carry_shapes(p) == {"h": (H,)}
            width = cfc.input_size(params)
            assert width == D + options.get("elapsed_time", True)
            for batch_shape in [(2, 3)] if seed else [(), (2, 3)]:  # no batch axes once is enough
                x = rng.normal(size=batch_shape + (width,))
                if options.get("elapsed_time", True):
                    x[..., -1] = rng.uniform(0.05, 3.0, size=batch_shape)
                h = rng.normal(scale=0.5, size=batch_shape + (H,))
                carry, y = step(params, cfc.CfCCarry(jnp.asarray(h)), jnp.asarray(x))
                assert y.shape == carry.h.shape == batch_shape + (H,)
                for index in np.ndindex(*batch_shape):
                    ref_carry, ref_y = ref_step(p, {"h": h[index]}, x[index])
                    np.testing.assert_allclose(carry.h[index], ref_carry["h"], rtol=1e-10, atol=1e-12, err_msg=str(options))
                    np.testing.assert_allclose(y[index], ref_y, rtol=1e-10, atol=1e-12, err_msg=str(options))


def test_layer_protocol_init_and_deer():
    """A layer through ``init_rnn`` (D ≠ H), ncps's init bounds, float32/64, and DEER against the scan."""
    key = jax.random.key(1)
    layer = recurrax.init_rnn(key, cfc, D, H, backbone_units=6, backbone_layers=2)
    cell = layer.cell
    assert (cfc.input_size(cell), cfc.output_size(cell)) == (D + 1, H)
    assert cell.w.dtype == jnp.float32 and cell.w.shape == (6, 4 * H) and cell.backbone_deep_w.shape == (1, 6, 6)
    assert cell.w_tau is None and cell.a is None
    # ncps: Xavier-uniform kernels (each head with its own fans), nn.Linear biases U(±1/sqrt(fan_in)).
    assert np.abs(cell.backbone_w).max() <= np.sqrt(6 / (D + H + 6)) and np.abs(cell.backbone_b).max() <= (D + H) ** -0.5
    assert np.abs(cell.w).max() <= np.sqrt(6 / (6 + H)) < np.abs(cell.w).max() * 1.5
    pure = cfc.init(key, D, H, mode="pure", backbone_layers=0)
    assert pure.w.shape == (D + H, H) and pure.backbone_w is None and pure.w_tau.shape == pure.a.shape == (H,)
    assert np.abs(pure.a).max() <= np.sqrt(6 / (H + 1)) and np.abs(pure.w_tau).max() <= np.sqrt(6 / (H + 1))
    xs = cfc.with_elapsed_time(jax.random.normal(key, (2, 5, D)), jnp.cumsum(jnp.full((2, 5), 0.7), axis=-1))
    carry, ys = recurrax.rnn(layer, xs)
    assert ys.shape == (2, 5, H) and carry.h.shape == (2, H)
    np.testing.assert_array_equal(ys[:, -1], carry.h)
    with jax.enable_x64(True):
        layer = recurrax.init_rnn(key, cfc, D, H, backbone_units=6, mode="no_gate", dtype=jnp.float64)
        layer = layer._replace(cell=_perturbed(layer.cell, 3))
        xs = cfc.with_elapsed_time(jax.random.normal(key, (2, 5, D), jnp.float64),
                                   jnp.asarray(np.cumsum(np.random.default_rng(1).uniform(0.1, 2, (2, 5)), -1)))
        w = jax.random.normal(jax.random.key(2), (2, 5, H), jnp.float64)

        def loss(layer, xs, method):
            return jnp.sum(recurrax.rnn(layer, xs, method=method)[1] * w)

        grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
        value, grads = grad_fn(layer, xs, "scan")
        value_deer, grads_deer = grad_fn(layer, xs, "deer")
        np.testing.assert_allclose(value_deer, value, rtol=1e-9)
        for a, b in zip(jax.tree.leaves(grads_deer), jax.tree.leaves(grads)):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_lengths_nan_padding():
    """Steps past ``lengths`` holding NaN (features and Δt) give the outputs and gradients of zero padding."""
    with jax.enable_x64(True):
        layer = recurrax.init_rnn(jax.random.key(4), cfc, D, H, backbone_units=5, mode="pure", dtype=jnp.float64)
        layer = layer._replace(cell=_perturbed(layer.cell, 4))
        rng = np.random.default_rng(4)
        times = np.cumsum(rng.uniform(0.1, 2.0, size=(3, 6)), axis=-1)
        lengths = np.array([6, 2, 4])
        padded = np.arange(6)[None, :] >= lengths[:, None]
        times[padded] = np.nan  # NaN stamps are allowed (Δt NaN at padded steps only)
        features = rng.normal(size=(3, 6, D))
        features[padded] = np.nan
        xs = np.asarray(cfc.with_elapsed_time(jnp.asarray(features), times))
        assert np.isnan(xs[padded]).all() and not np.isnan(xs[~padded]).any()
        w = rng.normal(size=(3, 6, H))

        def loss(layer, xs):
            carry, ys = recurrax.rnn(layer, xs, lengths=jnp.asarray(lengths))
            return jnp.sum(ys * w) + jnp.sum(carry.h), ys

        grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))
        (g_layer_nan, g_xs_nan), ys_nan = grad_fn(layer, jnp.asarray(xs))
        (g_layer_zero, g_xs_zero), ys_zero = grad_fn(layer, jnp.asarray(np.where(padded[..., None], 0.0, xs)))
        np.testing.assert_array_equal(ys_nan, ys_zero)
        assert not np.isnan(ys_nan).any() and np.all(np.asarray(ys_nan)[padded] == 0)
        for a, b in zip(jax.tree.leaves((g_layer_nan, g_xs_nan)), jax.tree.leaves((g_layer_zero, g_xs_zero))):
            assert not np.isnan(a).any()
            np.testing.assert_array_equal(a, b)
        # Each sequence alone, unpadded, gives its outputs: the padding changes nothing before it.
        for i, n in enumerate(lengths):
            _, ys_i = recurrax.rnn(layer, jnp.asarray(xs[i, :n]))
            np.testing.assert_allclose(ys_nan[i, :n], ys_i, rtol=1e-12, atol=1e-14)


def test_with_elapsed_time_and_time_stamps_matter():
    xs = jnp.zeros((2, 4, D))
    times = np.array([[0.0, 0.5, 0.5, 2.0], [1.0, 3.0, 3.5, 4.0]])
    np.testing.assert_array_equal(cfc.with_elapsed_time(xs, times)[..., -1], [[1.0, 0.5, 0.0, 1.5], [1.0, 2.0, 0.5, 0.5]])
    np.testing.assert_array_equal(cfc.with_elapsed_time(xs, times, initial_time=0.0)[..., 0, -1], [0.0, 1.0])
    np.testing.assert_array_equal(cfc.with_elapsed_time(xs, times, initial_time=np.array([-2.0, 0.5]))[..., 0, -1], [2.0, 0.5])
    out = cfc.with_elapsed_time(xs, np.array([[0, 2, 5, 9]] * 2))  # integer stamps
    assert out.dtype == jnp.float32 and out.shape == (2, 4, D + 1)
    np.testing.assert_array_equal(out[0, :, -1], [1, 2, 3, 4])
    np.testing.assert_array_equal(out[..., :D], xs)
    # Unix-time stamps in float64 NumPy: differences taken before the float32 cast (0.25 s survives).
    unix = 1.7e9 + np.array([[0.0, 0.25, 0.5, 1.0]] * 2)
    np.testing.assert_array_equal(cfc.with_elapsed_time(xs, unix)[0, 1:, -1], [0.25, 0.25, 0.5])
    assert cfc.with_elapsed_time(jnp.zeros((0, D)), np.zeros(0)).shape == (0, D + 1)  # T = 0, unbatched

    # The time stamps change the outputs: the same inputs, another sampling.
    layer = recurrax.init_rnn(jax.random.key(5), cfc, D, H, backbone_units=5)
    inputs = jax.random.normal(jax.random.key(6), (2, 4, D))
    _, ys = recurrax.rnn(layer, cfc.with_elapsed_time(inputs, times))
    _, ys_other = recurrax.rnn(layer, cfc.with_elapsed_time(inputs, 3.0 * times))
    np.testing.assert_array_equal(ys[:, 0], ys_other[:, 0])  # same first Δt = 1
    assert np.abs(ys[:, 1:] - ys_other[:, 1:]).max() > 1e-3

    with pytest.raises(ValueError, match=r"non-decreasing time stamps .* smallest Δt is -1.5"):
        cfc.with_elapsed_time(xs, np.array([[0.0, 2.0, 0.5, 3.0], [0.0, 1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="non-decreasing"):  # a decrease next to NaN padding is still found
        cfc.with_elapsed_time(xs, np.array([[0.0, 2.0, 1.0, np.nan], [0.0, 1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="non-decreasing"):
        cfc.with_elapsed_time(xs, times, initial_time=0.75)  # after the first sequence's first stamp, 0.0
    with pytest.raises(ValueError, match=r"Expected times with shape \(2, 4\) .* got shape \(4,\)"):
        cfc.with_elapsed_time(xs, times[0])
    with pytest.raises(ValueError, match=r"Expected times with shape \(2, 4\) .* got shape \(2, 4, 1\)"):
        cfc.with_elapsed_time(xs, times[..., None])
    with pytest.raises(ValueError, match=r"initial_time to be a number or of shape \(2,\)"):
        cfc.with_elapsed_time(xs, times, initial_time=np.zeros(3))
    with pytest.raises(ValueError, match=r"xs of shape \(\*batch, T, D\)"):
        cfc.with_elapsed_time(jnp.zeros(3), np.zeros(()))
    with pytest.raises(ValueError, match="real time stamps"):
        cfc.with_elapsed_time(xs, np.full((2, 4), "a"))
    # Under jit the stamps are traced: the check runs with the compiled call and fails it.
    jitted = jax.jit(cfc.with_elapsed_time)
    np.testing.assert_array_equal(jitted(xs, jnp.asarray(times))[..., -1], cfc.with_elapsed_time(xs, times)[..., -1])
    with pytest.raises(jax.errors.JaxRuntimeError, match="non-decreasing time stamps"):
        jax.block_until_ready(jitted(xs, jnp.asarray(times[:, ::-1])))


def test_bad_inputs():
    key = jax.random.key(7)
    with pytest.raises(ValueError, match=r"Expected mode in \['default', 'pure', 'no_gate'\], got 'gated'"):
        cfc.init(key, D, H, mode="gated")
    with pytest.raises(ValueError, match="Expected activation in .*'lecun_tanh'.*got 'softsign'"):
        cfc.init(key, D, H, activation="softsign")
    for layers in (-1, 1.5, True):
        with pytest.raises(ValueError, match=f"backbone_layers to be a non-negative integer, got {layers!r}"):
            cfc.init(key, D, H, backbone_layers=layers)
    with pytest.raises(ValueError, match="backbone_units to be a positive integer, got 0"):
        cfc.init(key, D, H, backbone_units=0)
    with pytest.raises(ValueError, match="elapsed_time to be True or False, got 1"):
        cfc.init(key, D, H, elapsed_time=1)
    with pytest.raises(ValueError, match="hidden_size to be a positive integer"):
        cfc.init(key, D, 0)
    params = cfc.init(key, D, H, backbone_units=5)
    carry = cfc.initial_carry(params, (2,))
    with pytest.raises(ValueError, match=r"last dimension 4 \(the cell's input_size\), got shape \(2, 3\)"):
        cfc.step(params, carry, jnp.zeros((2, D)))  # Δt forgotten
    with pytest.raises(ValueError, match=r"carry.h with shape \(3, 4\) .* got shape \(2, 4\)"):
        cfc.step(params, carry, jnp.zeros((3, D + 1)))
    with pytest.raises(ValueError, match="cfc.step expects CfCParams, got LSTMParams"):
        cfc.step(recurrax.init_rnn(key, "lstm", D + 1, H).cell, carry, jnp.zeros((2, D + 1)))
    with pytest.raises(ValueError, match="batch_shape as a tuple"):
        cfc.initial_carry(params, 2)

    sd = to_ncps(cfc.init(key, D, H, backbone_units=5))
    with pytest.raises(ValueError, match="Expected the keys of a 'pure' CfC"):
        from_ncps(sd, mode="pure")
    with pytest.raises(ValueError, match="Expected mode in"):
        from_ncps(sd, mode="gate")
    with pytest.raises(ValueError, match="mixed-memory LSTM"):
        from_ncps({**sd, "lstm.input_map.weight": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="projection"):
        from_ncps({**sd, "fc.weight": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="Missing key 'time_b.bias'"):
        from_ncps({k: v for k, v in sd.items() if k != "rnn_cell.time_b.bias"})
    with pytest.raises(ValueError, match=r"'backbone.0.bias' .* shape \(4,\), expected shape \(5,\)"):
        from_ncps({**sd, "rnn_cell.backbone.0.bias": np.zeros(4)})
    with pytest.raises(ValueError, match="a mix"):
        from_ncps({**{k.removeprefix("rnn_cell."): v for k, v in sd.items()}, "rnn_cell.A": np.zeros((1, 4))})
    with pytest.raises(ValueError, match="Unexpected key 'extra'"):
        from_ncps({**{k.removeprefix("rnn_cell."): v for k, v in sd.items()}, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="to_ncps expects a cfc or ltc layer or their params, got LSTMParams"):
        to_ncps(recurrax.init_rnn(key, "lstm", D, H))


def test_ltc_transcription_and_bad_inputs():
    """LTC ``step`` against ``reference_cfc``'s ``ltc`` per example, both constraints; its options' errors."""
    params_type, carry_shapes, output_size, ref_step = reference_cfc.FAMILIES["ltc"]
    rng = np.random.default_rng(8)
    step = jax.jit(ltc.step)
    with jax.enable_x64(True):
        for seed, options in enumerate([dict(), dict(implicit_param_constraints=False, ode_unfolds=2, elapsed_time=False)]):
            params = ltc.init(jax.random.key(seed), D, H, dtype=jnp.float64, **options)
            params = jax.tree.map(lambda v: v + jnp.asarray(rng.uniform(0, 0.2, v.shape)), params)  # keeps p(·) > 0
            p = _as_dicts(params)
            assert params_type == type(params).__name__
            assert output_size(p) == ltc.output_size(params) == H and carry_shapes(p) == {"v": (H,)}
            assert ltc.input_size(params) == D + options.get("elapsed_time", True)
            x = rng.normal(size=(2, 3, ltc.input_size(params)))
            if options.get("elapsed_time", True):
                x[..., -1] = rng.uniform(0.1, 3.0, size=(2, 3))
            h = rng.normal(size=(2, 3, H))
            carry, y = step(params, ltc.LTCCarry(jnp.asarray(h)), jnp.asarray(x))
            for index in np.ndindex(2, 3):
                ref_carry, ref_y = ref_step(p, {"v": h[index]}, x[index])
                np.testing.assert_allclose(carry.v[index], ref_carry["v"], rtol=1e-10, atol=1e-12, err_msg=str(options))
                np.testing.assert_allclose(y[index], ref_y, rtol=1e-10, atol=1e-12, err_msg=str(options))
        explicit = ltc.init(jax.random.key(9), D, H, implicit_param_constraints=False, dtype=jnp.float64)
        clipped = ltc.clip_weights(explicit._replace(w=-explicit.w, cm=explicit.cm - 1.0))
        assert float(clipped.w.max()) == 0.0 and float(clipped.cm.max()) == 0.0
        np.testing.assert_array_equal(clipped.sigma, explicit.sigma)
    # ncps's init ranges and polarities (−1 with probability 1/3).
    params = ltc.init(jax.random.key(10), 40, 60)
    assert 3 <= float(params.sigma.min()) and float(params.sigma.max()) <= 8 and 0.4 <= float(params.cm.min())
    assert set(np.unique(params.erev).tolist()) == {-1.0, 1.0} and 0.28 < float(np.mean(params.erev < 0)) < 0.39
    np.testing.assert_array_equal(params.input_w, np.ones(40))
    layer = recurrax.init_rnn(jax.random.key(11), ltc, D, H)
    carry, ys = recurrax.rnn(layer, cfc.with_elapsed_time(jnp.ones((2, 3, D)), jnp.array([[0.5, 1.0, 3.0]] * 2)))
    assert ys.shape == (2, 3, H) and bool(jnp.isfinite(ys).all())

    key = jax.random.key(12)
    with pytest.raises(ValueError, match="ode_unfolds to be a positive integer, got 0"):
        ltc.init(key, D, H, ode_unfolds=0)
    with pytest.raises(ValueError, match=r"Expected epsilon in \[0, inf\), got -1.0"):
        ltc.init(key, D, H, epsilon=-1.0)
    with pytest.raises(ValueError, match="implicit_param_constraints to be True or False"):
        ltc.init(key, D, H, implicit_param_constraints="softplus")
    params = ltc.init(key, D, H)
    with pytest.raises(ValueError, match=r"last dimension 4 \(the cell's input_size\), got shape \(2, 3\)"):
        ltc.step(params, ltc.initial_carry(params, (2,)), jnp.zeros((2, D)))
    sd = to_ncps(params)
    with pytest.raises(ValueError, match="sparse wirings are not supported"):
        from_ncps_ltc({**sd, "rnn_cell.sparsity_mask": np.eye(H)})
    with pytest.raises(ValueError, match="Missing key 'erev'"):
        from_ncps_ltc({k: v for k, v in sd.items() if k != "rnn_cell.erev"})
    with pytest.raises(ValueError, match=r"Key 'mu' .* shape \(4, 3\), expected shape \(4, 4\)"):
        from_ncps_ltc({**sd, "rnn_cell.mu": np.zeros((H, D))})
