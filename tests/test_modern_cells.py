"""minGRU, minLSTM, IndRNN and the LRU: what the common suite (``test_cells``) does not cover.

References: the float64 NumPy transcriptions of the papers' equations (``numpy_reference``), a
``lax.associative_scan`` over ``linear_recurrence`` against the sequential scan, and closed forms
(the IndRNN gradient over T steps is ``∏ u``; the LRU ring's moduli and phases).
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

import recurrax
from recurrax import indrnn, lru, mingru, minlstm

D, H, T = 3, 4, 9

# (registered name, init options) of the configurations tested here.
CONFIGS = {
    "mingru": ("mingru", {}),
    "mingru-log-space": ("mingru", {"log_space": True}),
    "minlstm": ("minlstm", {}),
    "minlstm-log-space": ("minlstm", {"log_space": True}),
    "indrnn-bounded": ("indrnn", {"recurrent_max": indrnn.recurrent_bound(T)}),
    "lru": ("lru", {}),
    "lru-long-range": ("lru", {"r_min": 0.9, "r_max": 0.999, "max_phase": math.pi / 10}),
}
LINEAR = [name for name, (family, _) in CONFIGS.items() if family != "indrnn"]


def _layer(name, key, input_size=D, hidden_size=H):
    family, options = CONFIGS[name]
    return recurrax.init_rnn(key, family, input_size, hidden_size, **options)


def _randomise_biases(layer, key):
    """Nonzero biases (``init`` makes them zero), so that a misplaced one shows."""
    cell = layer.cell
    if hasattr(cell, "b"):
        cell = cell._replace(b=0.5 * jax.random.normal(key, cell.b.shape, cell.b.dtype))
    return layer._replace(cell=cell)


def _random_like(key, tree, scale=0.5):
    """Normal values shaped like ``tree``'s leaves, one key per leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [scale * jax.random.normal(k, v.shape, v.dtype) for k, v in zip(keys, leaves)]
    )


# --------------------------------------------------------------------------- equations


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sequence_matches_numpy_transcription(name, key):
    k_p, k_b, k_x, k_c = jax.random.split(key, 4)
    layer = _randomise_biases(_layer(name, k_p), k_b)
    xs = jax.random.normal(k_x, (2, T, D))
    start = _random_like(k_c, recurrax.rnn_initial_carry(layer, (2,)))
    final, ys = recurrax.rnn(layer, xs, carry=start)
    want_final, want_ys = ref.run_batched(
        ref.cell_params(layer.cell), ref.f64(xs), ref.carry_dict(start)
    )
    np.testing.assert_allclose(ref.f64(ys), want_ys, rtol=1e-5, atol=1e-6)
    for field in type(final)._fields:
        np.testing.assert_allclose(
            ref.f64(getattr(final, field)), want_final[field], rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("name", [n for n in LINEAR if not n.startswith("lru")])
def test_step_is_exactly_the_linear_recurrence(name, key):
    k_p, k_b, k_x, k_c = jax.random.split(key, 4)
    layer = _randomise_biases(_layer(name, k_p), k_b)
    family, params = layer.family, layer.cell
    x = jax.random.normal(k_x, (2, 3, D))
    carry = _random_like(k_c, family.initial_carry(params, (2, 3)), scale=1.0)
    a, b = family.linear_recurrence(params, x)
    assert jax.tree.structure(a) == jax.tree.structure(b) == jax.tree.structure(carry)
    new, y = family.step(params, carry, x)
    np.testing.assert_array_equal(np.asarray(new.h), np.asarray(a.h * carry.h + b.h))  # bit for bit
    np.testing.assert_array_equal(np.asarray(y), np.asarray(family.output(params, new, x)))
    assert family.is_linear and family.to_linear is None  # the carry is its own linear view


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
def test_lru_step_is_the_complex_linear_recurrence(key, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        k_p, k_x, k_c = jax.random.split(key, 3)
        params = lru.init(k_p, D, H, r_min=0.5, r_max=0.99, dtype=dtype)
        x = jax.random.normal(k_x, (2, D), dtype)
        carry = lru.LRUCarry(*jax.random.normal(k_c, (2, 2, H), dtype))
        a, b = lru.linear_recurrence(params, x)
        assert a.shape == b.shape == (2, H) and jnp.iscomplexobj(a) and jnp.iscomplexobj(b)
        new, y = lru.step(params, carry, x)
        want = lru.from_linear(params, a * lru.to_linear(params, carry) + b)
        tol = 1e-6 if dtype == jnp.float32 else 1e-14  # real vs complex arithmetic: rounding only
        for got, expected in zip(new, want):
            assert got.dtype == expected.dtype == dtype
            np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=tol, atol=tol)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(lru.output(params, new, x)))
        family = recurrax.cells.resolve_family("lru")
        assert (
            family.is_linear
            and family.to_linear is lru.to_linear
            and family.from_linear is lru.from_linear
        )


@pytest.mark.parametrize("name", LINEAR)
def test_associative_scan_of_linear_recurrence_equals_unroll(name, key):
    """What ``linear_recurrence`` is for: a parallel scan over time gives the sequential trajectory."""
    k_p, k_b, k_x, k_c = jax.random.split(key, 4)
    layer = _randomise_biases(_layer(name, k_p), k_b)
    family, params = layer.family, layer.cell
    xs = jax.random.normal(k_x, (T, 2, D))  # time-major
    start = _random_like(k_c, family.initial_carry(params, (2,)), scale=1.0)
    _, ys, carries = recurrax.unroll(
        functools.partial(family.step, params), start, xs, time_major=True, return_carries=True
    )
    to_linear = family.to_linear or (lambda p, c: c)
    from_linear = family.from_linear or (lambda p, s: s)
    a, b = jax.vmap(family.linear_recurrence, in_axes=(None, 0))(params, xs)
    # fold the start into the first step: s_0' = a_0 s + b_0
    b = jax.tree.map(lambda a_l, b_l, s: b_l.at[0].add(a_l[0] * s), a, b, to_linear(params, start))

    def combine(earlier, later):  # (a1, b1) then (a2, b2): s -> a2 (a1 s + b1) + b2
        (a1, b1), (a2, b2) = earlier, later
        a = jax.tree.map(jnp.multiply, a2, a1)
        return a, jax.tree.map(lambda a2_l, b1_l, b2_l: a2_l * b1_l + b2_l, a2, b1, b2)

    _, states = jax.lax.associative_scan(combine, (a, b))
    scanned = jax.vmap(from_linear, in_axes=(None, 0))(params, states)
    for got, want in zip(jax.tree.leaves(scanned), jax.tree.leaves(carries)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    outputs = jax.vmap(family.output, in_axes=(None, 0, 0))(params, scanned, xs)
    np.testing.assert_allclose(np.asarray(outputs), np.asarray(ys), rtol=1e-5, atol=1e-5)


def test_log_space_candidate_is_positive_and_log_g_is_its_log():
    from recurrax.cells import _minimal

    v = jnp.linspace(-30.0, 30.0, 121)
    g = _minimal.g(v)
    assert bool(jnp.all(g > 0))
    np.testing.assert_allclose(
        np.asarray(_minimal.log_g(v)), np.log(ref.min_g(ref.f64(v))), rtol=1e-5, atol=1e-6
    )
    # positive from a zero start, over a sequence with negative pre-activations
    params = mingru.init(jax.random.key(1), D, H, log_space=True)
    params = params._replace(b=jnp.full((2 * H,), -3.0))
    _, ys = recurrax.unroll(
        functools.partial(mingru.step, params), mingru.initial_carry(params), jnp.ones((T, D))
    )
    assert bool(jnp.all(ys > 0))


def test_minlstm_normalised_gates_sum_to_one(key):
    params = minlstm.init(key, D, H)
    x = jax.random.normal(jax.random.key(1), (5, D))
    for b in (
        jax.random.normal(jax.random.key(2), (3 * H,)),
        jnp.full((3 * H,), -200.0),
        jnp.full((3 * H,), 60.0),
    ):
        f, i = minlstm.gates(params._replace(b=b), x)
        # finite also where f and i both underflow (f/(f + i) would be 0/0 there)
        assert bool(jnp.all(jnp.isfinite(f)) and jnp.all(jnp.isfinite(i)))
        np.testing.assert_allclose(np.asarray(f + i), 1.0, rtol=0, atol=2e-7)
    # and they are f/(f + i), i/(f + i)
    b = jax.random.normal(jax.random.key(3), (3 * H,))
    f, i = minlstm.gates(params._replace(b=b), x)
    z = ref.f64(x) @ ref.f64(params.w_x) + ref.f64(b)
    f_raw, i_raw = ref.sigmoid(z[:, :H]), ref.sigmoid(z[:, H : 2 * H])
    np.testing.assert_allclose(ref.f64(f), f_raw / (f_raw + i_raw), rtol=1e-5)
    np.testing.assert_allclose(ref.f64(i), i_raw / (f_raw + i_raw), rtol=1e-5)


# --------------------------------------------------------------------------- IndRNN's bound


def test_indrnn_gradient_over_1000_steps_is_bounded_by_gamma_under_the_constraint():
    """‖∂h_T/∂h_0‖ = ∏ σ' u: at most γ with |u| ≤ γ^{1/T}; with u = 1.05 unconstrained, 1.05^T."""
    length, gamma = 1000, 2.0
    bound = indrnn.recurrent_bound(length, gamma)
    with jax.enable_x64(True):
        xs = jnp.ones((length, 2), jnp.float64)
        h0 = jnp.full((3,), 0.1, jnp.float64)

        def jacobian(recurrent_max):
            params = indrnn.init(
                jax.random.key(0), 2, 3, recurrent_max=recurrent_max, dtype=jnp.float64
            )
            # every unit stays active (relu' = 1), so nothing but u scales the gradient
            params = params._replace(
                u=jnp.full((3,), 1.05), w_x=jnp.full((2, 3), 0.1), b=jnp.full((3,), 0.1)
            )

            def final(h0):
                carry, _ = recurrax.unroll(
                    functools.partial(indrnn.step, params), indrnn.IndRNNCarry(h0), xs
                )
                return carry.h

            return np.asarray(jax.jacfwd(final)(h0))

        constrained, free = jacobian(bound), jacobian(None)
    norm = np.linalg.norm(constrained, 2)
    assert norm <= gamma * (1 + 1e-9)
    assert norm >= 0.999 * gamma  # the bound is attained: |u| sits at γ^{1/T} after the clip
    np.testing.assert_allclose(np.linalg.norm(free, 2), 1.05**length, rtol=1e-9)
    assert np.linalg.norm(free, 2) > 1e20  # explodes


def test_indrnn_clip_and_recurrent_blocks(key):
    params = indrnn.init(key, D, H, recurrent_max=0.5)
    assert bool(jnp.all((params.u >= 0) & (params.u <= 0.5)))  # drawn in [0, m]
    params = params._replace(u=jnp.array([-2.0, -0.3, 0.2, 0.9]))
    np.testing.assert_array_equal(
        np.asarray(indrnn.recurrent_weights(params)), np.float32([-0.5, -0.3, 0.2, 0.5])
    )
    spectrum = recurrax.gradient_flow.recurrent_spectrum(
        recurrax.RNNParams(params, None, recurrax.cells.resolve_family("indrnn"))
    )
    assert spectrum["h"].spectral_radius == pytest.approx(0.5)
    free = indrnn.init(key, D, H)
    assert free.recurrent_max.value is None and bool(jnp.all((free.u >= 0) & (free.u <= 1)))
    low, high = 0.5 ** (1 / 100), indrnn.recurrent_bound(100)  # a remembering layer at T = 100
    drawn = indrnn.init(key, D, 64, recurrent_max=high, recurrent_range=(low, high))
    assert float(drawn.u.min()) >= low - 1e-6


# --------------------------------------------------------------------------- LRU initialisation


@pytest.mark.parametrize(
    "r_min,r_max,max_phase", [(0.0, 1.0, 2 * math.pi), (0.9, 0.999, math.pi / 10), (0.5, 0.6, 1.0)]
)
def test_lru_ring_initialisation(key, r_min, r_max, max_phase):
    n = 512
    params = lru.init(key, D, n, r_min=r_min, r_max=r_max, max_phase=max_phase)
    modulus = np.exp(-np.exp(ref.f64(params.nu_log)))
    phase = np.exp(ref.f64(params.theta_log))
    tol = 1e-6
    assert modulus.min() >= r_min - tol and modulus.max() <= r_max + tol
    assert phase.min() > 0 and phase.max() <= max_phase * (1 + tol)
    # uniform on the ring (in area): |λ|² uniform on [r_min², r_max²]; the phase uniform
    area = (modulus**2 - r_min**2) / (r_max**2 - r_min**2)
    assert abs(area.mean() - 0.5) < 0.05 and abs(np.median(phase) / max_phase - 0.5) < 0.08
    np.testing.assert_allclose(
        np.exp(ref.f64(params.gamma_log)), np.sqrt(1 - modulus**2), rtol=1e-4, atol=1e-6
    )
    lam = np.asarray(lru.eigenvalues(params), np.complex128)
    np.testing.assert_allclose(lam, modulus * np.exp(1j * phase), rtol=1e-5, atol=1e-6)
    spectrum = recurrax.gradient_flow.recurrent_spectrum(params, cell="lru")["h"]
    assert spectrum.spectral_radius == pytest.approx(np.abs(lam).max(), rel=1e-5)


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("family", ["mingru", "minlstm", "indrnn", "lru"])
def test_rnn_with_lengths_ignores_garbage_padding(family, key):
    k_p, k_x, k_g = jax.random.split(key, 3)
    params = recurrax.init_rnn(k_p, family, D, H)
    lengths = jnp.array([T, 4, 1])
    xs = jax.random.normal(k_x, (3, T, D))
    valid = recurrax.sequence_mask(lengths, T)[..., None]
    garbage = jnp.where(valid, xs, 1e3 * jax.random.normal(k_g, xs.shape))
    final, ys = recurrax.rnn(params, jnp.where(valid, xs, 0.0), lengths=lengths)
    final_g, ys_g = recurrax.rnn(params, garbage, lengths=lengths)
    np.testing.assert_array_equal(np.asarray(ys_g), np.asarray(ys))
    for a, b in zip(final_g, final):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert bool(jnp.all(jnp.where(valid, 0.0, ys) == 0))  # zero output at padded steps
    # each final carry is the carry at the sequence's own last step
    for b, length in enumerate(lengths.tolist()):
        alone, _ = recurrax.rnn(params, xs[b : b + 1, :length])
        for a, want in zip(final, alone):
            np.testing.assert_allclose(np.asarray(a[b]), np.asarray(want[0]), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "module", [mingru, minlstm, indrnn, lru], ids=lambda m: m.__name__.rsplit(".", 1)[-1]
)
def test_wrong_feature_size_and_carry(module, key):
    params = module.init(key, D, H)
    carry = module.initial_carry(params, (2,))
    name = module.__name__.rsplit(".", 1)[-1]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Expected x with last dimension 3 (the cell's input_size), got shape (2, 5)."
        ),
    ):
        module.step(params, carry, jnp.ones((2, 5)))
    other = recurrax.elman.initial_carry(recurrax.elman.init(key, D, H), (2,))
    with pytest.raises(
        ValueError,
        match=re.escape(f"{name}.step expects a {type(carry).__name__} carry, got ElmanCarry."),
    ):
        module.step(params, other, jnp.ones((2, D)))
    wide = jax.tree.map(lambda v: jnp.zeros((2, H + 1), v.dtype), carry)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"with shape (2, {H}) (x's batch shape + hidden_size), got shape (2, {H + 1})."
        ),
    ):
        module.step(params, wide, jnp.ones((2, D)))
    with pytest.raises(
        ValueError, match=re.escape(f"{name}.step expects {type(params).__name__}, got ElmanParams")
    ):
        module.step(recurrax.elman.init(key, D, H), carry, jnp.ones((2, D)))


def test_bad_options(key):
    cases = [
        (
            lambda: mingru.init(key, D, H, log_space="yes"),
            "Expected log_space to be True or False, got 'yes'.",
        ),
        (
            lambda: minlstm.init(key, D, H, log_space=1),
            "Expected log_space to be True or False, got 1.",
        ),
        (
            lambda: indrnn.init(key, D, H, activation="gelu"),
            "Expected activation in ['identity', 'relu', 'sigmoid', 'tanh'], got 'gelu'.",
        ),
        (
            lambda: indrnn.init(key, D, H, recurrent_max=0.0),
            "Expected recurrent_max in (0, inf), got 0.0.",
        ),
        (
            lambda: indrnn.init(key, D, H, recurrent_max=float("nan")),
            "Expected recurrent_max in (0, inf), got nan.",
        ),
        (
            lambda: indrnn.init(key, D, H, recurrent_max=1.01, recurrent_range=(0.0, 1.5)),
            "Expected recurrent_range within [-recurrent_max, recurrent_max] = [-1.01, 1.01], got (0, 1.5).",
        ),
        (
            lambda: indrnn.init(key, D, H, recurrent_range=(0.5,)),
            "Expected recurrent_range as a (low, high) pair, got (0.5,).",
        ),
        (lambda: indrnn.recurrent_bound(0), "Expected length to be a positive integer, got 0."),
        (
            lambda: lru.init(key, D, H, r_min=0.9, r_max=0.9),
            "Expected r_min < r_max (a ring of positive width), got r_min=0.9, r_max=0.9.",
        ),
        (lambda: lru.init(key, D, H, r_max=1.5), "Expected r_max in [0, 1], got 1.5."),
        (lambda: lru.init(key, D, H, r_min=-0.1), "Expected r_min in [0, 1], got -0.1."),
        (
            lambda: lru.init(key, D, H, max_phase=0.0),
            "Expected max_phase in (0, 6.28319], got 0.0.",
        ),
        (
            lambda: lru.init(key, D, H, max_phase=7.0),
            "Expected max_phase in (0, 6.28319], got 7.0.",
        ),
        (lambda: lru.init(key, D, 0), "Expected hidden_size to be a positive integer, got 0."),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            make()
