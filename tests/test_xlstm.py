"""sLSTM and mLSTM (xLSTM, Beck et al. 2024) against xlstm 2.0.6, a NumPy transcription, and themselves.

References: ``tests/fixtures/xlstm/*.npz`` (written by ``make_xlstm_fixtures.py`` from xlstm's
vanilla sLSTM backend and its mLSTM recurrent, parallel and chunkwise backends, float64, with
gradients), ``reference_xlstm.py`` (one step of each in NumPy), and for the mLSTM's parallel
forms the sequential scan (``rnn(method="associative")`` and ``mlstm.chunkwise``).
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_xlstm as ref

import recurrax
from recurrax.cells import mlstm, slstm
from recurrax.interop import xlstm as ix

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "xlstm"
F64 = dict(rtol=1e-10, atol=1e-10)


def _close(actual, expected, what, **tol):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), err_msg=what, **(tol or F64))


# Random numbers come from NumPy and layers are built around given params without running
# ``init`` (``test_protocol_layers_and_spectra`` runs it through ``init_rnn``): each eager JAX
# op would compile a program of its own, which is most of a small test's time on this machine.


def _layer(family, cell):
    """An ``RNNParams`` layer around given cell params, the family checked as ``init_rnn`` does."""
    family = recurrax.cells.as_family(family)
    recurrax.cells.check_family(family, cell)
    return recurrax.RNNParams(cell=cell, initial=None, family=family)


def _random_like(seed, tree, scale=0.5):
    """Normal values (NumPy) shaped like ``tree``'s leaves, in their dtypes."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda v: jnp.asarray(scale * rng.standard_normal(v.shape), v.dtype), tree)


def _random_cell(family, seed, scale=0.7, dtype=jnp.float64, input_size=3, hidden_size=4, **options):
    """Cell params of ``family.init``'s structure, every weight and bias random (init zeroes some)."""
    abstract = jax.eval_shape(lambda: family.init(jax.random.key(0), input_size, hidden_size, dtype=dtype, **options))
    return _random_like(seed, abstract, scale)


def _normal(seed, shape, dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _invariant(carry):
    """``(C e^m, n e^m)``: an mLSTM state without its gauge (carries equal up to ``m`` give equal outputs)."""
    state = mlstm.to_linear(None, carry)
    return state.C, state.n


# --------------------------------------------------------------------------- xlstm fixtures


def test_slstm_matches_xlstm_vanilla_backend():
    f = dict(np.load(FIXTURES / "slstm.npz"))
    with jax.enable_x64(True):
        params = ix.from_xlstm({k.removeprefix("state_dict."): v for k, v in f.items() if k.startswith("state_dict.")},
                               f["w_x"], backend="vanilla")
        cuda = ix.from_xlstm({"cell." + k.removeprefix("cuda_state_dict."): v for k, v in f.items()
                              if k.startswith("cuda_state_dict.")}, f["w_x"], backend="cuda")
        for name in ("r", "b"):  # the two backends' layouts hold the same weights
            np.testing.assert_array_equal(getattr(cuda, name), getattr(params, name))
        layer = _layer(slstm, params)

        def loss(cell, xs, carry0, w_ys, w_state):
            final, ys = recurrax.rnn(layer._replace(cell=cell), xs, carry=carry0)
            return jnp.sum(ys * w_ys) + jnp.sum(jnp.stack(final) * w_state), (final, ys)

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))  # one program for both runs
        for run in ("zero", "given"):
            carry0 = ix.slstm_carry_from_xlstm(f[f"{run}.state0"])
            (g_cell, g_x, g_carry), (final, ys) = grad(params, jnp.asarray(f["x"]), carry0,
                                                       f[f"{run}.w_ys"], f[f"{run}.w_state"])
            _close(ys, f[f"{run}.ys"], f"{run}: outputs")
            _close(ix.slstm_carry_to_xlstm(final), f[f"{run}.state"], f"{run}: final state")
            g_ref = ix.from_xlstm({k: f[f"{run}.grad.{k}"] for k in ("_recurrent_kernel_", "_bias_")},
                                  f[f"{run}.grad.w_x"])
            for name in ("w_x", "r", "b"):
                _close(getattr(g_cell, name), getattr(g_ref, name), f"{run}: gradient of {name}")
            _close(g_x, f[f"{run}.grad.x"], f"{run}: gradient of x")
            _close(ix.slstm_carry_to_xlstm(g_carry), f[f"{run}.grad.state0"], f"{run}: gradient of the initial state")


def test_mlstm_matches_xlstm_backends():
    f = dict(np.load(FIXTURES / "mlstm.npz"))
    with jax.enable_x64(True):
        weights = {k.removeprefix("weights."): jnp.asarray(v) for k, v in f.items() if k.startswith("weights.")}
        params = mlstm.MLSTMParams(**weights, options=mlstm.MLSTMOptions(eps=1e-6))
        layer = _layer(mlstm, params)
        xs = jnp.asarray(f["x"])
        given = mlstm.MLSTMCarry(*(jnp.asarray(f[k]) for k in ("C0", "n0", "m0")))
        zero = mlstm.initial_carry(params, (2,))
        from_minus_infinity = zero._replace(m=jnp.full_like(zero.m, -jnp.inf))  # the parallel form's start

        def run_rnn(cell, xs, carry0):
            return recurrax.rnn(layer._replace(cell=cell), xs, carry=carry0)

        def run_chunkwise(chunk_size):
            return lambda cell, xs, carry0: mlstm.chunkwise(cell, xs, carry0, chunk_size=chunk_size)

        def gradient(fn):
            """The jitted gradient of ``Σ ys·w_ys + Σ_leaves final·w`` (the fixture's loss) and the values."""
            def loss(cell, xs, carry0, w_ys, w_final):
                final, ys = fn(cell, xs, carry0)
                total = jnp.sum(ys * w_ys) + sum(jnp.sum(leaf * w) for leaf, w in zip(final, w_final))
                return total, (final, ys)
            return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))

        scan = gradient(run_rnn)
        # (fixture run, label, gradient function, initial carry, convention of the fixture's final state)
        cases = [("recurrent", "scan", scan, given, "recurrent"), ("zero", "scan", scan, zero, "recurrent"),
                 ("parallel", "scan from m = -inf", scan, from_minus_infinity, None),
                 ("chunkwise", "chunkwise(3)", gradient(run_chunkwise(3)), given, "chunkwise"),  # xlstm's chunks
                 ("chunkwise", "chunkwise(4)", gradient(run_chunkwise(4)), given, "chunkwise")]  # 6 = 2 x 4: padded
        for run, label, grad, carry0, convention in cases:
            what = f"{run} vs {label}"
            expected = None
            w_final = jax.tree.map(jnp.zeros_like, zero)  # the parallel form returns no state
            if convention is not None:
                expected = ix.mlstm_carry_from_xlstm(f[f"{run}.C"], f[f"{run}.n"], f[f"{run}.m"], backend=convention)
                # the fixture's loss weighs xlstm's state tensors: the same weights on recurrax's carry
                scale = 1.0 if convention == "recurrent" else float(np.sqrt(f[f"{run}.C"].shape[-1]))
                w_final = mlstm.MLSTMCarry(scale * f[f"{run}.w_C"], scale * f[f"{run}.w_n"].reshape(expected.n.shape),
                                           f[f"{run}.w_m"].reshape(expected.m.shape))
            (g_cell, g_x, g_carry), (final, ys) = grad(params, xs, carry0, f[f"{run}.w_ys"], w_final)
            _close(ys, f[f"{run}.ys"], f"{what}: outputs")
            if expected is not None:
                for name in ("C", "n", "m"):
                    _close(getattr(final, name), getattr(expected, name), f"{what}: final {name}")
            for name in mlstm.MLSTMParams._fields[:-1]:
                _close(getattr(g_cell, name), f[f"{run}.grad.{name}"], f"{what}: gradient of {name}")
            _close(g_x, f[f"{run}.grad.x"], f"{what}: gradient of x")
            if f"{run}.grad.C0" in f:
                for name, key in (("C", "C0"), ("n", "n0"), ("m", "m0")):
                    _close(getattr(g_carry, name), f[f"{run}.grad.{key}"], f"{what}: gradient of the initial {name}")

        # The associative form with xlstm's eps: its carries have m = 0 where the step's have m_t,
        # so the normaliser's eps term differs by eps·|e^{m_t} − 1| relative to max(|n̄·q|, 1).
        final, ys = jax.jit(lambda layer: recurrax.rnn(layer, xs, method="associative"))(layer)
        _close(ys, f["zero.ys"], "associative (eps = 1e-6) vs xlstm's recurrent steps", rtol=1e-5, atol=1e-6)
        assert float(np.max(np.abs(np.asarray(ys) - f["zero.ys"]))) > 1e-12  # eps is what separates them
        expected = ix.mlstm_carry_from_xlstm(f["zero.C"], f["zero.n"], f["zero.m"])
        for a, b in zip(_invariant(final), _invariant(expected)):
            _close(a, b, "associative: final state without its gauge", rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- NumPy transcription


def _as_dict(params):
    out = {}
    for name, value in params._asdict().items():
        if dataclasses.is_dataclass(value):
            out[name] = dataclasses.asdict(value)
        else:
            out[name] = None if value is None else np.asarray(value, np.float64)
    return out


def test_steps_match_numpy_transcription():
    with jax.enable_x64(True):
        configs = [
            (slstm, dict(num_heads=2, recurrent_init="standard", bias_init="standard")),
            # the output gate (and heads=2, eps=1e-6) is in the xlstm fixtures; here its absence
            (mlstm, dict(num_heads=2, output_gate=False)),
        ]
        for index, (family, options) in enumerate(configs):
            params = _random_cell(family, 10 * index, **options)
            name = family.__name__.rsplit(".", 1)[-1]
            params_type, carry_shapes, output_size, step = ref.FAMILIES[name]
            assert type(params).__name__ == params_type
            p = _as_dict(params)
            assert output_size(p) == family.output_size(params) == 4
            carry = _random_like(10 * index + 1, family.initial_carry(params, (3,)), 1.0)
            if family is slstm:  # n > 0, except unit 1 of example 0: the n = 0 start there
                n = jnp.abs(carry.n) + 0.1
                carry = carry._replace(n=n.at[0, 1].set(0.0), c=carry.c.at[0, 1].set(0.0))
            for field, shape in carry_shapes(p).items():
                assert getattr(carry, field).shape == (3,) + shape
            xs = _normal(10 * index + 2, (3, 3))

            def steps(params, carry, xs, step=family.step):  # batch axes (3,), none, and (1, 3)
                return (step(params, carry, xs), step(params, jax.tree.map(lambda v: v[0], carry), xs[0]),
                        step(params, jax.tree.map(lambda v: v[None], carry), xs[None]))

            (new, ys), (new0, y0), (new2, y2) = jax.jit(steps)(params, carry, xs)
            for b in range(3):
                ref_carry, ref_y = step(p, {f: np.asarray(v[b]) for f, v in carry._asdict().items()}, np.asarray(xs[b]))
                _close(ys[b], ref_y, f"{name} {options}: output of example {b}")
                for field in carry._fields:
                    _close(getattr(new, field)[b], ref_carry[field], f"{name} {options}: carry.{field} of example {b}")
            # no batch axes, and two: the same numbers
            _close(y0, ys[0], f"{name}: unbatched step")
            _close(y2[0], ys, f"{name}: two batch axes")
            for a, b, c in zip(new, new0, new2):
                _close(b, a[0], f"{name}: unbatched carry")
                _close(c[0], a, f"{name}: carry with two batch axes")


# --------------------------------------------------------------------------- mLSTM parallel forms


def _mlstm_layer(seed, eps=1e-6, dtype=jnp.float64, scale=0.7):
    return _layer(mlstm, _random_cell(mlstm, seed, scale, dtype, num_heads=2, eps=eps))


def _form_gradient(form, **rnn_options):
    """Jitted gradient (params, xs, initial carry) of ``Σ ys·w + 0.1 Σ C e^m + 0.1 Σ n e^m`` by one form."""
    def loss(layer, xs, carry, w):
        if form == "scan":
            final, ys = recurrax.rnn(layer, xs, carry=carry, **rnn_options)
        elif form == "associative":
            final, ys = recurrax.rnn(layer, xs, carry=carry, method="associative", **rnn_options)
        else:
            final, ys = mlstm.chunkwise(layer.cell, xs, carry, chunk_size=form)
        C, n = _invariant(final)
        return jnp.sum(ys * w) + 0.1 * jnp.sum(C) + 0.1 * jnp.sum(n), (final, ys)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


def test_mlstm_parallel_forms_equal_the_sequential_scan():
    """Associative and chunkwise against the scan: outputs, final carry, gradients (float64, ``eps = 0``).

    With ``eps = 1e-6`` (xlstm's) the chunkwise form keeps the step's stabiliser and stays exact
    (``test_mlstm_matches_xlstm_backends``); the associative form's carry has ``m = 0``, so its
    ``eps`` term differs by ``eps·|e^m − 1|`` (checked there too).
    """
    with jax.enable_x64(True):
        xs, w = _normal(20, (2, 7, 3)), _normal(21, (2, 7, 4))
        # chunks of 3: 7 steps padded to 9 (two identity steps), three chunks
        layer = _mlstm_layer(22, eps=0.0)
        carry0 = _random_like(23, mlstm.initial_carry(layer.cell, (2,)))
        (g_ref, gx_ref, gc_ref), (final_ref, ys_ref) = _form_gradient("scan")(layer, xs, carry0, w)
        for form in ("associative", 3):
            (g, gx, gc), (final, ys) = _form_gradient(form)(layer, xs, carry0, w)
            _close(ys, ys_ref, f"{form}: outputs")
            for a, b in zip(_invariant(final), _invariant(final_ref)):
                _close(a, b, f"{form}: final state")
            if form != "associative":  # the same stabiliser at every step: the same carry
                for name in ("C", "n", "m"):
                    _close(getattr(final, name), getattr(final_ref, name), f"{form}: final {name}")
            for a, b in zip(jax.tree.leaves((g, gx, gc)), jax.tree.leaves((g_ref, gx_ref, gc_ref))):
                _close(a, b, f"{form}: gradients (params, inputs, initial carry)")


def test_mlstm_associative_lengths_and_nan_padding():
    with jax.enable_x64(True):
        layer = _mlstm_layer(30, eps=0.0)
        xs, w = _normal(31, (2, 6, 3)), _normal(32, (2, 6, 4))
        carry0 = mlstm.initial_carry(layer.cell, (2,))
        lengths = jnp.array([6, 3])
        padded = jnp.arange(6)[None, :, None] >= lengths[:, None, None]
        (g_ref, gx_ref, _), (final_ref, ys_ref) = _form_gradient("scan", lengths=lengths)(
            layer, jnp.where(padded, 0.0, xs), carry0, w)
        associative = _form_gradient("associative", lengths=lengths)
        for fill in (0.0, jnp.nan):
            (g, gx, _), (final, ys) = associative(layer, jnp.where(padded, fill, xs), carry0, w)
            _close(ys, ys_ref, f"fill {fill}: outputs")
            assert not np.any(np.asarray(ys)[1, 3:])  # zero at padded steps
            for a, b in zip(_invariant(final), _invariant(final_ref)):
                _close(a, b, f"fill {fill}: final state (the last valid step's)")
            for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
                _close(a, b, f"fill {fill}: gradients of the params")
            assert bool(jnp.all(jnp.isfinite(gx)))
            _close(gx, gx_ref, f"fill {fill}: gradients of the inputs (zero at padded steps)")


def test_mlstm_associative_overflow_limit():
    """float32: the unstabilised state ``C̄ ~ e^m`` overflows once ``ĩ`` passes log(finfo.max) ≈ 88.7.

    The sequential scan and the chunkwise form are stabilised and stay finite.
    """
    layer = _mlstm_layer(40, dtype=jnp.float32, eps=0.0, scale=0.3)
    xs = _normal(41, (2, 5, 3), jnp.float32)

    @jax.jit
    def forms(layer):
        return (recurrax.rnn(layer, xs)[1], mlstm.chunkwise(layer.cell, xs, chunk_size=2)[1],
                recurrax.rnn(layer, xs, method="associative")[1])

    for b_i, finite in ((60.0, True), (100.0, False)):
        big = layer._replace(cell=layer.cell._replace(b_i=jnp.full_like(layer.cell.b_i, b_i)))
        ys, ys_chunk, ys_assoc = forms(big)
        assert bool(jnp.all(jnp.isfinite(ys))) and bool(jnp.all(jnp.isfinite(ys_chunk)))
        _close(ys_chunk, ys, f"b_i={b_i}: chunkwise", rtol=1e-5, atol=1e-6)
        assert bool(jnp.all(jnp.isfinite(ys_assoc))) == finite, f"b_i={b_i}"
        if finite:
            _close(ys_assoc, ys, f"b_i={b_i}: associative", rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- protocol, init, errors


def test_protocol_layers_and_spectra():
    key = jax.random.key(5)
    s = recurrax.init_rnn(key, slstm, 3, 8, num_heads=2, recurrent_init="standard")
    m = recurrax.init_rnn(key, mlstm, 3, 8, num_heads=4)
    assert "associative" in recurrax.parallel.methods_for(m.family)
    blocks = slstm.recurrent_blocks(s.cell)
    assert sorted(blocks) == ["f", "i", "o", "z"]
    h = _normal(50, (2, 8), jnp.float32)
    rec = jnp.concatenate([h @ blocks[g] for g in "ifzo"], axis=-1)
    np.testing.assert_allclose(rec, slstm.recurrent(s.cell, h), rtol=1e-6, atol=1e-6)
    assert float(blocks["i"][0, 5]) == 0.0 and float(blocks["i"][0, 2]) != 0.0  # block-diagonal over 2 heads of 4
    spectra = recurrax.analysis.gradient_flow.recurrent_spectrum(s)
    assert sorted(spectra) == ["f", "i", "o", "z"]
    # xlstm's default biases (its "powerlaw_blockdependent" init, read from a fresh xlstm cell;
    # xlstm computes the power law in float32): the forget block per head, other gates at 0
    _close(s.cell.b, np.load(FIXTURES / "slstm.npz")["default_init._bias_"], "default bias init", rtol=1e-6, atol=1e-6)
    b = s.cell.b.reshape(4, 2, 4)
    np.testing.assert_allclose(b[1, 0], [5.0, 5.0 - 12 * (1 / 3) ** 0.3, 5.0 - 12 * (2 / 3) ** 0.3, -7.0], rtol=1e-6)
    assert not np.any(np.asarray(b)[[0, 2, 3]])
    p = m.cell
    np.testing.assert_allclose(p.b_f, np.linspace(3, 6, 4), rtol=1e-6)
    assert not bool(jnp.any(p.w_i)) and not bool(jnp.any(p.w_f))


def test_bad_inputs():
    key = jax.random.key(6)
    with pytest.raises(ValueError, match=r"num_heads to divide hidden_size, got hidden_size=4, num_heads=3"):
        slstm.init(key, 3, 4, num_heads=3)
    with pytest.raises(ValueError, match=r"num_heads to divide hidden_size, got hidden_size=4, num_heads=3"):
        mlstm.init(key, 3, 4, num_heads=3)
    with pytest.raises(ValueError, match=r"num_heads to be a positive integer, got 0"):
        mlstm.init(key, 3, 4, num_heads=0)
    with pytest.raises(ValueError, match=r"bias_init in .* got 'ones'"):
        slstm.init(key, 3, 4, num_heads=2, bias_init="ones")
    with pytest.raises(ValueError, match=r"eps in \[0, inf\), got -1"):
        mlstm.init(key, 3, 4, num_heads=2, eps=-1.0)
    with pytest.raises(ValueError, match=r"output_gate to be True or False, got 1"):
        mlstm.init(key, 3, 4, num_heads=2, output_gate=1)
    s, m = slstm.init(key, 3, 4, num_heads=2), mlstm.init(key, 3, 4, num_heads=2)
    with pytest.raises(ValueError, match=r"x with last dimension 3 .* got shape \(2, 5\)"):
        slstm.step(s, slstm.initial_carry(s, (2,)), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"x with last dimension 3 .* got shape \(2, 5\)"):
        mlstm.step(m, mlstm.initial_carry(m, (2,)), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"carry.C with shape \(2, 2, 2, 2\) .* got shape \(3, 2, 2, 2\)"):
        mlstm.step(m, mlstm.initial_carry(m, (3,)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"expects an MLSTMCarry carry, got SLSTMCarry"):
        mlstm.step(m, slstm.initial_carry(s, (2,)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"slstm.step expects SLSTMParams, got MLSTMParams"):
        slstm.step(m, slstm.initial_carry(s, (2,)), jnp.ones((2, 3)))
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=r"chunk_size to be a positive integer, got"):
            mlstm.chunkwise(m, jnp.ones((2, 5, 3)), chunk_size=bad)
    with pytest.raises(ValueError, match=r"xs with last dimension 3 .* got shape \(2, 5, 4\)"):
        mlstm.chunkwise(m, jnp.ones((2, 5, 4)))
    with pytest.raises(ValueError, match=r"xs of shape \(\*batch, time, features\), got shape \(3,\)"):
        mlstm.chunkwise(m, jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"params.w_o of shape \(3, 4\), got \(3, 5\)"):
        mlstm.step(m._replace(w_o=jnp.ones((3, 5))), mlstm.initial_carry(m, ()), jnp.ones(3))
    sd = {"_recurrent_kernel_": np.zeros((2, 8, 2)), "_bias_": np.zeros(16)}
    with pytest.raises(ValueError, match=r"backend in \('vanilla', 'cuda'\), got 'triton'"):
        ix.from_xlstm(sd, np.zeros((3, 16)), backend="triton")
    with pytest.raises(ValueError, match=r"cuda backend's _recurrent_kernel_ of shape .* got \(2, 8, 2\)"):
        ix.from_xlstm(sd, np.zeros((3, 16)), backend="cuda")
    with pytest.raises(ValueError, match=r"w_x of shape \(input_size, 16\), got \(3, 12\)"):
        ix.from_xlstm(sd, np.zeros((3, 12)))
    with pytest.raises(ValueError, match=r"exactly one key ending in '_bias_'"):
        ix.from_xlstm({"_recurrent_kernel_": sd["_recurrent_kernel_"]}, np.zeros((3, 16)))
