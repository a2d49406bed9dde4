"""The RG-LRU cell and Hawk's recurrent block (``recurrax.cells.rglru``, ``recurrax.blocks.hawk``).

References: recurrentgemma 1.0.1's own ``RGLRU`` and ``RecurrentBlock`` (fixtures written by
``tests/fixtures/make_recurrentgemma_fixtures.py``: outputs, final states and gradients, float32
and float64), the float64 NumPy transcription ``tests/reference_rglru.py``, and the sequential
scan for the parallel forms (``rnn(method="associative")``, ``hawk.sequence``).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_rglru as ref

import recurrax
from recurrax.blocks import hawk
from recurrax.cells import rglru
from recurrax.interop import recurrentgemma as rgi

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "recurrentgemma")
# Largest |error| allowed, relative to max(1, max |reference|). float32: the two computations
# round differently (recurrentgemma's 1 − exp(2 log a) against −expm1(2 log a) here, a scan
# against stepping), a few ulps through 6 steps (measured ≤ 4e-7); float64: to rounding
# (measured ≤ 6e-14, the largest on the unit whose 1 − a² is ~1e-8).
TOL = {"f32": 1e-5, "f64": 1e-10}


def _load(name: str) -> dict:
    with np.load(os.path.join(FIXTURES, f"{name}.npz")) as z:
        return {k: z[k] for k in z.files}


def _under(fixture: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in fixture.items() if k.startswith(prefix)}


def _close(got, want, tol: float, what: str) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    error = float(np.max(np.abs(got - want))) if want.size else 0.0
    assert error <= tol * max(1.0, float(np.max(np.abs(want)))), f"{what}: max error {error:.3g}"


def _close_params(grads, want: dict, tol: float, what: str) -> None:
    """Gradients on recurrax params against recurrentgemma's, through the converter's export."""
    got = rgi._flatten(rgi.to_recurrentgemma(grads))
    params = {k: v for k, v in want.items() if "/" in k or k == "a_param"}
    assert sorted(got) == sorted(params), (sorted(got), sorted(params))
    for name, value in params.items():
        _close(got[name], value, tol, f"{what} {name}")


def _first_steps(xs):
    """recurrentgemma's ``segment_pos == 0`` for ``segment_pos = arange(T)``: True at t = 0."""
    return jnp.zeros(xs.shape[:-1], bool).at[..., 0].set(True)


def _rglru_with_resets(cell, xs, reset, carry=None):
    """``rglru.step`` over ``xs`` ``(B, T, D)`` with document starts ``reset`` ``(B, T)``."""
    carry = rglru.initial_carry(cell, xs.shape[:1]) if carry is None else carry
    carry, ys = jax.lax.scan(lambda c, xr: rglru.step(cell, c, xr[0], reset=xr[1]), carry,
                             (jnp.moveaxis(xs, 1, 0), reset.T))
    return carry, jnp.moveaxis(ys, 0, 1)


def _hawk_with_resets(cell, xs, reset, carry=None):
    carry = hawk.initial_carry(cell, xs.shape[:1]) if carry is None else carry
    carry, ys = jax.lax.scan(lambda c, xr: hawk.step(cell, c, xr[0], reset=xr[1]), carry,
                             (jnp.moveaxis(xs, 1, 0), reset.T))
    return carry, jnp.moveaxis(ys, 0, 1)


def _random_like(tree, rng):
    return jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape), v.dtype), tree)


def _normal(rng, shape):
    return jnp.asarray(rng.standard_normal(shape))


def _random_layer(module, rng, *args, **options):
    """A float64 layer of ``module`` with N(0, 0.5²) params shaped by ``module.init(key, *args, **options)``.

    The shapes come from ``jax.eval_shape`` (no init is run: an eager init compiles a program per
    random op, seconds on this machine; ``test_init`` runs the real ones)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, dtype=jnp.float64, **options))
    cell = jax.tree.map(lambda v: jnp.asarray(0.5 * rng.standard_normal(v.shape), v.dtype), shapes)
    return recurrax.RNNParams(cell=cell, initial=None, family=recurrax.cells.as_family(module))


# --------------------------------------------------------------------------- recurrentgemma


@pytest.mark.parametrize("tag", ["f32", "f64"])
def test_rglru_matches_recurrentgemma(tag):
    fx = _load(f"rglru_{tag}")
    tol = TOL[tag]
    with jax.enable_x64(tag == "f64"):
        layer = rgi.from_recurrentgemma(_under(fx, "params/"))
        assert layer.family == recurrax.cells.as_family(rglru)
        x, w, h0 = (jnp.asarray(fx[k]) for k in ("x", "w", "h0"))

        # A document, segment_pos = arange(T): recurrentgemma's reset at t = 0 is rglru's reset.
        def document(cell, x):
            carry, ys = _rglru_with_resets(cell, x, _first_steps(x))
            return jnp.sum(ys * w), (ys, carry)

        (g_cell, g_x), (ys, carry) = jax.jit(jax.grad(document, argnums=(0, 1), has_aux=True))(layer.cell, x)
        _close(ys, fx["y"], tol, "y")
        _close(carry.h, fx["h_last"], tol, "h_last")
        _close(g_x, fx["grad/x"], tol, "grad x")
        _close_params(g_cell, _under(fx, "grad/"), tol, "grad")

        # A continued stream (segment_pos never 0) from h0: the plain layer, recurrax.rnn.
        def stream(cell, x, h0):
            carry, ys = recurrax.rnn(layer._replace(cell=cell), x, carry=rglru.RGLRUCarry(h0))
            return jnp.sum(ys * w), (ys, carry)

        (g_cell, g_x, g_h0), (ys, carry) = jax.jit(jax.grad(stream, argnums=(0, 1, 2), has_aux=True))(
            layer.cell, x, h0)
        _close(ys, fx["stream/y"], tol, "stream y")
        _close(rgi.carry_to_recurrentgemma(carry), fx["stream/h_last"], tol, "stream h_last")
        _close(g_x, fx["stream/grad/x"], tol, "stream grad x")
        _close(g_h0, fx["stream/grad/h0"], tol, "stream grad h0")
        _close_params(g_cell, _under(fx, "stream/grad/"), tol, "stream grad")

        # The documented difference: without the reset, step 0 scales the document's first
        # output by sqrt(1 − a_0²) (and h_{-1} = 0 makes a_0 irrelevant otherwise).
        plain, log_a = jax.jit(lambda layer, x: (recurrax.rnn(layer, x)[1], rglru.log_decay(layer.cell, x)))(layer, x)
        a0 = np.exp(np.asarray(log_a[:, 0], np.float64))
        _close(plain[:, 0], fx["y"][:, 0] * np.sqrt(1 - a0**2), tol, "y_0 without reset")
        if tag == "f64":   # Λ = −20 on unit 0: 1 − a² < 1/(4·1000²), the sqrt derivative bound acts
            assert float(np.max(-np.expm1(2 * np.asarray(log_a)[..., 0]))) < 2.5e-7


@pytest.mark.parametrize("tag", ["f32", "f64"])
def test_hawk_matches_recurrentgemma(tag):
    fx = _load(f"block_{tag}")
    tol = TOL[tag]
    with jax.enable_x64(tag == "f64"):
        layer = rgi.from_recurrentgemma({"params": _under(fx, "params/")})
        assert layer.family == recurrax.cells.as_family(hawk)
        cell, x, w = layer.cell, jnp.asarray(fx["x"]), jnp.asarray(fx["w"])

        def run(cell, x, reset):
            carry, ys = hawk.sequence(cell, x, reset=reset)
            return jnp.sum(ys * w), (ys, carry)

        grad = jax.jit(jax.grad(run, argnums=(0, 1), has_aux=True))
        (g_cell, g_x), (ys, carry) = grad(cell, x, _first_steps(x))
        _close(ys, fx["y"], tol, "y")
        state = rgi.carry_to_recurrentgemma(carry)
        _close(state["rg_lru_state"], fx["rg_lru_state"], tol, "rg_lru_state")
        _close(state["conv1d_state"], fx["conv1d_state"], tol, "conv1d_state")
        _close(g_x, fx["grad/x"], tol, "grad x")
        _close_params(g_cell, _under(fx, "grad/"), tol, "grad")

        # Two documents packed in row 0: the conv's document mask and the RG-LRU's reset.
        (_, g_x), (ys, _) = grad(cell, x, jnp.asarray(fx["packed/segment_pos"] == 0))
        _close(ys, fx["packed/y"], tol, "packed y")
        _close(g_x, fx["packed/grad/x"], tol, "packed grad x")

        # One decoding step from recurrentgemma's cache (position T: no reset).
        start = rgi.carry_from_recurrentgemma(
            {"rg_lru_state": fx["decode/rg_lru_state_in"], "conv1d_state": fx["decode/conv1d_state_in"]}, layer)
        carry, y = jax.jit(hawk.step)(cell, start, jnp.asarray(fx["decode/x"][:, 0]))
        _close(y, fx["decode/y"][:, 0], tol, "decode y")
        state = rgi.carry_to_recurrentgemma(carry)
        _close(state["rg_lru_state"], fx["decode/rg_lru_state"], tol, "decode rg_lru_state")
        _close(state["conv1d_state"], fx["decode/conv1d_state"], tol, "decode conv1d_state")


def test_converter_round_trip_and_refusals():
    fx = _load("block_f32")
    params = _under(fx, "params/")
    back = rgi._flatten(rgi.to_recurrentgemma(rgi.from_recurrentgemma(params)))
    assert sorted(back) == sorted(params)
    assert all(np.array_equal(back[k], params[k]) for k in params)          # bit for bit
    with pytest.raises(ValueError, match="Missing key 'conv_1d/b'"):
        rgi.from_recurrentgemma({k: v for k, v in params.items() if k != "conv_1d/b"})
    with pytest.raises(ValueError, match="a_imag_param"):
        rgi.from_recurrentgemma({**_under(_load("rglru_f32"), "params/"), "a_imag_param": np.zeros(4)})
    with pytest.raises(ValueError, match="Unexpected key 'extra'"):
        rgi.from_recurrentgemma({**_under(_load("rglru_f32"), "params/"), "extra": np.zeros(4)})
    with pytest.raises(ValueError, match="no in-projection"):
        rgi.to_recurrentgemma(jax.eval_shape(lambda: rglru.init(jax.random.key(0), 3, 4)))


# --------------------------------------------------------------------------- init


def test_init():
    """recurrentgemma's initialisation: decays a⁰ = exp(−softplus(Λ)) on the ring [0.9, 0.999],
    gate kernels N(0, 1/H) per block, zero biases; the in-projection only when D ≠ H; Hawk's
    conv taps N(0, 0.01/K) and its lru without in-projection."""
    # Jitted (one program per init, not one per eager op) and with the "rbg" PRNG, whose programs
    # compile in a third of threefry's time here; init's code is the same for any key.
    keys = jax.random.split(jax.random.key(7, impl="rbg"), 2)
    cell = jax.jit(lambda k: recurrax.init_rnn(k, rglru, 3, 64, num_heads=4, min_rad=0.5, max_rad=0.9))(keys[0]).cell
    assert (cell.w_in.shape, cell.w_a.shape, cell.w_i.shape, cell.b_a.shape) == ((3, 64), (4, 16, 16), (4, 16, 16), (64,))
    assert cell.a_param.dtype == jnp.float32 and not np.any(cell.b_a) and not np.any(cell.b_i)
    decay = np.exp(-np.logaddexp(0.0, np.asarray(cell.a_param, np.float64)))
    assert decay.min() >= 0.5 - 1e-6 and decay.max() <= 0.9 + 1e-6 and decay.max() - decay.min() > 0.2
    assert 0.7 < float(np.std(cell.w_a)) * 8 < 1.3                # std 1/sqrt(64)
    assert jax.eval_shape(lambda: rglru.init(keys[1], 4, 4)).w_in is None
    assert rglru.input_size(cell) == 3 and rglru.output_size(cell) == 64

    block = jax.jit(lambda k: recurrax.init_rnn(k, hawk, 3, 5, lru_width=8, num_heads=2, conv_width=3))(keys[1]).cell
    assert (block.w_y.shape, block.w_x.shape, block.conv.w.shape, block.w_out.shape) == ((3, 8), (3, 8), (3, 8), (8, 5))
    assert block.lru.w_in is None and block.lru.w_a.shape == (2, 4, 4)
    assert float(np.max(np.abs(block.conv.w))) < 0.5                # std 0.1/sqrt(3) ≈ 0.06
    assert (hawk.input_size(block), hawk.output_size(block), hawk.lru_width(block), hawk.conv_width(block)) == (3, 5, 8, 3)


# --------------------------------------------------------------------------- NumPy transcription


def _as_dicts(params):
    """A params NamedTuple as a dict of float64 arrays by field (nested NamedTuples as dicts)."""
    return {name: None if v is None else _as_dicts(v) if hasattr(v, "_fields") else np.asarray(v, np.float64)
            for name, v in params._asdict().items()}


def test_numpy_transcription():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        cases = [
            (rglru, _random_layer(rglru, rng, 3, 4, num_heads=2).cell, 3),   # with w_in
            (rglru, _random_layer(rglru, rng, 4, 4, num_heads=2).cell, 4),   # the paper's cell
            (hawk, _random_layer(hawk, rng, 3, 4, lru_width=6, num_heads=3, conv_width=3).cell, 3),
        ]
        for module, params, d in cases:
            name = recurrax.cells.as_family(module).name
            params_type, carry_shapes, output_size, step = ref.FAMILIES[name]
            assert type(params).__name__ == params_type
            p = _as_dicts(params)
            carry = _random_like(module.initial_carry(params, (2,)), rng)
            assert {k: v.shape[1:] for k, v in carry._asdict().items()} == carry_shapes(p)
            x = _normal(rng, (2, d))
            new, y = jax.jit(module.step)(params, carry, x)
            assert y.shape == (2, output_size(p)) == (2, module.output_size(params))
            for b in range(2):
                want_carry, want_y = step(p, {k: np.asarray(v[b]) for k, v in carry._asdict().items()}, np.asarray(x[b]))
                _close(y[b], want_y, 1e-12, f"{name} y")
                for k, v in want_carry.items():
                    _close(getattr(new, k)[b], v, 1e-12, f"{name} carry.{k}")


# --------------------------------------------------------------------------- parallel forms


def test_rglru_associative_equals_scan_with_lengths():
    """rnn(method="associative") == the sequential scan: outputs, final carry and gradients with
    respect to params, inputs and the initial carry; NaN at padded steps changes nothing."""
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        layer = _random_layer(rglru, rng, 3, 4, num_heads=2)
        xs = _normal(rng, (2, 7, 3))
        h0 = rglru.RGLRUCarry(_normal(rng, (2, 4)))
        lengths = jnp.array([7, 4])
        padded = jnp.arange(7)[None, :, None] >= lengths[:, None, None]

        @jax.jit
        def both(cell, xs, h0):
            def run(method):
                def loss(cell, xs, h0):
                    carry, ys = recurrax.rnn(layer._replace(cell=cell), xs, carry=h0, lengths=lengths, method=method)
                    return jnp.sum(jnp.sin(ys)) + jnp.sum(carry.h ** 2), (ys, carry)
                return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(cell, xs, h0)
            return run("scan"), run("associative")

        results = [both(layer.cell, jnp.where(padded, fill, xs), h0) for fill in (0.0, jnp.nan)]
        reference = results[0][0]
        for result in (results[0][1], *results[1]):
            for got, want in zip(jax.tree.leaves(result), jax.tree.leaves(reference)):
                _close(got, want, 1e-12, "associative/NaN padding vs scan")
        assert bool(jnp.all(reference[1][0][1][:, 4:] == 0))   # no output at padded steps

        # jacobian_diagonal is the true diagonal of the carry Jacobian (unbatched step); forward
        # mode (the bounded sqrt is a custom JVP: jax.jvp, jacfwd, DEER work) agrees with reverse.
        direction = _random_like(layer.cell, rng)

        @jax.jit
        def jacobians(cell, h, x):
            step = lambda h: rglru.step(cell, rglru.RGLRUCarry(h), x)[0].h   # noqa: E731
            loss = lambda c: jnp.sum(jnp.sin(recurrax.rnn(layer._replace(cell=c), xs, carry=h0)[1]))  # noqa: E731
            forward = jax.jvp(loss, (cell,), (direction,))[1]
            reverse = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(jax.grad(loss)(cell)), jax.tree.leaves(direction)))
            return (rglru.jacobian_diagonal(cell, rglru.RGLRUCarry(h), x), jax.jacfwd(step)(h), jax.jacrev(step)(h),
                    step(h), forward, reverse)

        (new, diag), jac, jac_reverse, stepped, forward, reverse = jacobians(layer.cell, h0.h[0], xs[0, 0])
        _close(diag.h, np.diagonal(jac), 1e-14, "jacobian diagonal")
        _close(jac - np.diag(np.diagonal(jac)), np.zeros((4, 4)), 0.0, "off-diagonal")
        _close(jac, jac_reverse, 1e-14, "jacfwd vs jacrev")
        _close(new.h, stepped, 0.0, "jacobian_diagonal's carry")
        _close(forward, reverse, 1e-12, "jvp vs vjp through rnn")


def test_hawk_sequence_equals_stepping():
    """hawk.sequence (associative and sequential) == stepping through rnn, with gradients; with
    resets == stepping with resets; NaN padding through rnn changes nothing."""
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        layer = _random_layer(hawk, rng, 3, 4, lru_width=6, num_heads=2, conv_width=3)
        xs = _normal(rng, (2, 7, 3))
        start = _random_like(hawk.initial_carry(layer.cell, (2,)), rng)
        reset = jnp.asarray(rng.random((2, 7)) < 0.3)
        lengths = jnp.array([7, 3])
        padded = jnp.arange(7)[None, :, None] >= lengths[:, None, None]

        def loss(fn):
            def value(cell, xs, carry):
                carry, ys = fn(cell, xs, carry)
                return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(v ** 2) for v in carry), (ys, carry)
            return jax.grad(value, argnums=(0, 1, 2), has_aux=True)

        @jax.jit
        def all_forms(cell, xs, carry):
            stepped = loss(lambda c, x, s: recurrax.rnn(layer._replace(cell=c), x, carry=s))(cell, xs, carry)
            parallel = loss(lambda c, x, s: hawk.sequence(c, x, s))(cell, xs, carry)
            sequential = hawk.sequence(cell, xs, carry, method="sequential")
            # Resets (gradients with resets: against recurrentgemma, test_hawk_matches_recurrentgemma).
            with_resets = (_hawk_with_resets(cell, xs, reset, carry), hawk.sequence(cell, xs, carry, reset=reset))
            # One sequence unbatched, and two batch axes.
            shapes = (hawk.sequence(cell, xs[1], jax.tree.map(lambda v: v[1], carry)),
                      hawk.sequence(cell, xs[None], jax.tree.map(lambda v: v[None], carry)))
            return stepped, parallel, sequential, with_resets, shapes

        # Lengths through rnn: NaN at padded steps must give the zero-padded outputs and gradients.
        lengths_run = jax.jit(loss(lambda c, x, s: recurrax.rnn(layer._replace(cell=c), x, carry=s, lengths=lengths)))
        zero, nan = (lengths_run(layer.cell, jnp.where(padded, fill, xs), start) for fill in (0.0, jnp.nan))

        stepped, parallel, sequential, (reset_stepped, reset_sequence), (one, two) = all_forms(layer.cell, xs, start)
        for got, want in zip(jax.tree.leaves(parallel), jax.tree.leaves(stepped)):
            _close(got, want, 1e-12, "hawk.sequence vs stepping")
        ys, carry = stepped[1]   # (gradients, (outputs, final carry))
        for got, want in zip(jax.tree.leaves(sequential), jax.tree.leaves((carry, ys))):
            _close(got, want, 1e-12, "hawk.sequence(method='sequential') vs stepping")
        for got, want in zip(jax.tree.leaves(reset_sequence), jax.tree.leaves(reset_stepped)):
            _close(got, want, 1e-12, "hawk.sequence vs stepping, with resets")
        _close(one[1], ys[1], 1e-13, "unbatched")
        _close(two[1][0], ys, 1e-13, "two batch axes")
        for got, want in zip(jax.tree.leaves(nan), jax.tree.leaves(zero)):
            _close(got, want, 0.0, "NaN padding vs zero padding")
        _close(zero[1][0][0], ys[0], 1e-12, "a full-length row unchanged by the other's padding")
        _close(zero[1][0][1, :3], ys[1, :3], 1e-12, "valid steps of the padded row (causal: as unpadded)")


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    key = jax.random.key(6)
    with pytest.raises(ValueError, match=r"num_heads to divide hidden_size.*hidden_size=6, num_heads=4"):
        rglru.init(key, 3, 6, num_heads=4)
    with pytest.raises(ValueError, match="num_heads to be a positive integer, got 0"):
        rglru.init(key, 3, 4, num_heads=0)
    with pytest.raises(ValueError, match=r"min_rad < max_rad, got min_rad=0.99, max_rad=0.9"):
        rglru.init(key, 3, 4, min_rad=0.99, max_rad=0.9)
    with pytest.raises(ValueError, match=r"num_heads to divide lru_width.*lru_width=6, num_heads=4"):
        hawk.init(key, 3, 4, lru_width=6, num_heads=4)
    with pytest.raises(ValueError, match=r"num_heads to divide lru_width.*lru_width=6, num_heads=4"):
        hawk.init(key, 3, 6, num_heads=4)   # lru_width defaults to hidden_size
    with pytest.raises(ValueError, match="conv_width to be a positive integer, got 0"):
        hawk.init(key, 3, 4, conv_width=0)
    with pytest.raises(ValueError, match="lru_width to be a positive integer, got -2"):
        hawk.init(key, 3, 4, lru_width=-2)

    # The checks are static: on abstract values (jax.eval_shape), no program is compiled.
    def abstract(fn, *args, **kwargs):
        """``fn`` on abstract values: the array arguments (ShapeDtypeStructs) traced, the rest as given."""
        def is_array(v):
            leaves = jax.tree.leaves(v)
            return bool(leaves) and all(isinstance(leaf, (jax.ShapeDtypeStruct, jax.Array)) for leaf in leaves)

        positional = [v if is_array(v) else None for v in args]
        named = {k: v for k, v in kwargs.items() if is_array(v)}

        def call(positional, named):
            merged_args = [p if is_array(a) else a for p, a in zip(positional, args)]
            return fn(*merged_args, **{**kwargs, **named})
        return jax.eval_shape(call, positional, named)

    def array(*shape, dtype=jnp.float32):
        return jax.ShapeDtypeStruct(shape, dtype)

    cell = abstract(rglru.init, key, 3, 4, num_heads=2)
    carry = abstract(rglru.initial_carry, cell, (2,))
    with pytest.raises(ValueError, match=r"last dimension 3 \(the cell's input_size\), got shape \(2, 4\)"):
        abstract(rglru.step, cell, carry, array(2, 4))
    with pytest.raises(ValueError, match=r"carry.h with shape \(3, 4\).*got shape \(2, 4\)"):
        abstract(rglru.step, cell, carry, array(3, 3))
    with pytest.raises(ValueError, match=r"reset as a boolean array of shape \(2,\).*got int32 of shape \(2,\)"):
        abstract(rglru.step, cell, carry, array(2, 3), reset=array(2, dtype=jnp.int32))
    with pytest.raises(ValueError, match="rglru.step expects RGLRUParams, got HawkParams"):
        abstract(rglru.step, abstract(hawk.init, key, 3, 4), carry, array(2, 3))

    block = abstract(hawk.init, key, 3, 4, lru_width=6, num_heads=2)
    state = abstract(hawk.initial_carry, block, (2,))
    with pytest.raises(ValueError, match=r"x with last dimension 3 \(the cell's input_size\), got shape \(2, 4\)"):
        abstract(hawk.step, block, state, array(2, 4))
    with pytest.raises(ValueError, match=r"carry.window with shape \(2, 3, 6\).*got shape \(2, 2, 6\)"):
        abstract(hawk.step, block, state._replace(window=array(2, 2, 6)), array(2, 3))
    with pytest.raises(ValueError, match=r"xs of shape \(\*batch, T, input_size\), got shape \(3,\)"):
        abstract(hawk.sequence, block, array(3))
    with pytest.raises(ValueError, match="method 'associative' or 'sequential', got 'elk'"):
        abstract(hawk.sequence, block, array(2, 5, 3), method="elk")
    with pytest.raises(ValueError, match=r"reset as a boolean array of shape \(2, 5\)"):
        abstract(hawk.sequence, block, array(2, 5, 3), reset=array(2, 4, dtype=jnp.bool_))
    with pytest.raises(ValueError, match="expects a HawkCarry carry, got RGLRUCarry"):
        abstract(hawk.sequence, block, array(2, 5, 3), carry)
