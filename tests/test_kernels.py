"""The oneDNN kernel behind ``rnn``: equal to the scan (values and every gradient), each documented
fallback, forward-mode autodiff, vmap, bad input, and that the kernel is built where it can be.

The reference is recurrax's own scan (``kernel="scan"``), itself tested against NumPy
transcriptions of the equations, PyTorch and Python loops elsewhere in the suite; here the two
paths must agree to float32 rounding (outputs, final carries, gradients with respect to params,
inputs and the initial carry).
"""

import platform
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.kernels import _layer as kernel_layer

pytestmark = pytest.mark.skipif(not recurrax.kernels.available(),
                                reason=f"oneDNN kernel unavailable: {recurrax.kernels.unavailable_reason()}")

B, T, D, H = 3, 7, 4, 5
TOL = dict(rtol=2e-5, atol=2e-5)

CELLS = {
    "lstm": {},
    "gru": {},
    "gru_reset_before": {"reset_after": False},
    "elman_tanh": {},
    "elman_relu": {"activation": "relu"},
    "elman_sigmoid": {"activation": "sigmoid"},
}


def _family(name):
    return name.split("_")[0]


def _perturbed(params, key):
    """Non-zero biases and b_hn, so every weight block matters."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [leaf + 0.2 * jax.random.normal(k, leaf.shape, leaf.dtype)
                                     for leaf, k in zip(leaves, keys)])


def _layer(name, key=jax.random.key(0)):
    k1, k2 = jax.random.split(key)
    params = recurrax.init_rnn(k1, _family(name), D, H, **CELLS[name])
    return params._replace(cell=_perturbed(params.cell, k2))


def _loss_and_outputs(layer_fn):
    """A scalar that reads every output and final-carry entry, with the outputs as aux."""
    def loss(params, xs, carry):
        final, ys = layer_fn(params, xs, carry)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final)), (final, ys)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def _assert_paths_agree(run, params, xs, carry):
    """``run(params, xs, carry, kernel)`` on the kernel and the scan: values and all gradients."""
    on_kernel = _loss_and_outputs(lambda p, x, c: run(p, x, c, "onednn"))(params, xs, carry)
    on_scan = _loss_and_outputs(lambda p, x, c: run(p, x, c, "scan"))(params, xs, carry)
    chex.assert_trees_all_close(on_kernel, on_scan, **TOL)


def _carry(params, batch_shape, key=jax.random.key(3)):
    carry = recurrax.rnn_initial_carry(params, batch_shape)
    return jax.tree.map(lambda leaf: 0.5 * jax.random.normal(key, leaf.shape, leaf.dtype), carry)


# --------------------------------------------------------------------------- the build


def test_the_kernel_is_built_wherever_a_compiler_is():
    """CI has a compiler: a missing kernel there is a failed build, never a silent fallback."""
    if platform.system() != "Linux" or platform.machine() != "x86_64" or shutil.which("c++") is None:
        pytest.skip("no C++ compiler or not Linux x86-64: the kernel is not expected")
    assert recurrax.kernels.available(), recurrax.kernels.unavailable_reason()
    assert recurrax.kernels.onednn_version()[:2] == (3, 2)


# --------------------------------------------------------------------------- kernel == scan


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("layout", ["batch_first", "time_major", "reverse", "two_batch_axes"])
def test_kernel_equals_scan_values_and_gradients(name, layout):
    params = _layer(name)
    batch_shape = (2, B) if layout == "two_batch_axes" else (B,)
    time_major = layout == "time_major"
    shape = (T,) + batch_shape + (D,) if time_major else batch_shape + (T, D)
    xs = jax.random.normal(jax.random.key(1), shape)

    def run(p, x, c, kernel):
        return recurrax.rnn(p, x, carry=c, time_major=time_major, reverse=layout == "reverse", kernel=kernel)

    _assert_paths_agree(run, params, xs, _carry(params, batch_shape))


@pytest.mark.parametrize("name", [n for n in CELLS if n != "lstm"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("time_major", [False, True])
def test_kernel_with_lengths_equals_scan(name, reverse, time_major):
    params = _layer(name)
    lengths = jnp.array([T, 3, 0])
    xs = jax.random.normal(jax.random.key(1), (T, B, D) if time_major else (B, T, D))

    def run(p, x, c, kernel):
        return recurrax.rnn(p, x, carry=c, lengths=lengths, reverse=reverse, time_major=time_major, kernel=kernel)

    _assert_paths_agree(run, params, xs, _carry(params, (B,)))


@pytest.mark.parametrize("reverse", [False, True])
def test_padding_reaches_neither_outputs_nor_gradients_on_the_kernel(reverse):
    params = _layer("gru")
    lengths = jnp.array([T, 3, 1])
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    valid = recurrax.sequence_mask(lengths, T)[..., None]
    grad = _loss_and_outputs(lambda p, x, c: recurrax.rnn(p, x, carry=c, lengths=lengths, reverse=reverse,
                                                          kernel="onednn"))
    clean = grad(params, jnp.where(valid, xs, 0.0), _carry(params, (B,)))
    dirty = grad(params, jnp.where(valid, xs, jnp.nan), _carry(params, (B,)))
    for leaf in jax.tree.leaves(dirty):
        assert np.isfinite(np.asarray(leaf)).all()
    chex.assert_trees_all_equal(dirty, clean)
    (_, (_, ys)), (_, g_xs, _) = dirty
    padding = ~np.asarray(valid[..., 0])
    assert (np.asarray(ys)[padding] == 0).all() and (np.asarray(g_xs)[padding] == 0).all()


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_on_the_kernel_equals_two_scans(merge):
    k1, k2 = jax.random.split(jax.random.key(0))
    params = recurrax.init_bidirectional(k1, "lstm", D, H, merge=merge)
    params = params._replace(forward=params.forward._replace(cell=_perturbed(params.forward.cell, k2)))
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    carry = (_carry(params.forward, (B,)), _carry(params.backward, (B,), jax.random.key(4)))
    _assert_paths_agree(lambda p, x, c, kernel: recurrax.bidirectional(p, x, carry=c, kernel=kernel), params, xs, carry)


def test_both_directions_in_one_primitive_equal_two_calls():
    """oneDNN's bidirectional primitive (``directions=2``, measured by the bench's primitive timing)."""
    from recurrax.kernels import _onednn

    keys = jax.random.split(jax.random.key(0), 6)
    x = jax.random.normal(keys[0], (T, B, D))
    h0, c0 = (jax.random.normal(k, (2, B, H)) for k in keys[1:3])
    w_x, w_h, bias = (0.3 * jax.random.normal(k, s) for k, s in zip(keys[3:], [(2, D, 4, H), (2, H, 4, H), (2, 4, H)]))
    both = _onednn.layer(_onednn.Cell.LSTM, x, h0, c0, w_x, w_h, bias, directions=2)
    one = [_onednn.layer(_onednn.Cell.LSTM, x, h0[d:d + 1], c0[d:d + 1], w_x[d:d + 1], w_h[d:d + 1], bias[d:d + 1],
                         reverse=d == 1) for d in range(2)]
    expected = (jnp.concatenate([one[0][0], one[1][0]], axis=-1),) + tuple(
        jnp.concatenate([one[0][i], one[1][i]], axis=0) for i in (1, 2))
    chex.assert_trees_all_close(both, expected, **TOL)


def test_a_deep_bidirectional_stack_with_lengths_equals_the_scan():
    params = recurrax.init_stack(jax.random.key(0), D, [H, 6], cell=["gru", "elman"], bidirectional=True)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    lengths = jnp.array([T, 4, 2])
    for lengths_ in (None, lengths):
        _assert_paths_agree(lambda p, x, c, kernel: recurrax.stack(p, x, lengths=lengths_, kernel=kernel),
                            params, xs, None)


def test_auto_runs_onednns_forward_and_the_scans_gradient(monkeypatch):
    """``auto`` at H >= 256: the kernel's values undifferentiated, the scan's under ``grad``."""
    monkeypatch.setattr(kernel_layer, "FORWARD_FROM_HIDDEN", H)  # the rule applies at this test's size
    params = _layer("lstm")
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    carry = _carry(params, (B,))
    chex.assert_trees_all_equal(recurrax.rnn(params, xs, carry=carry), recurrax.rnn(params, xs, carry=carry,
                                                                                    kernel="onednn"))
    on_auto = _loss_and_outputs(lambda p, x, c: recurrax.rnn(p, x, carry=c))(params, xs, carry)
    on_scan = _loss_and_outputs(lambda p, x, c: recurrax.rnn(p, x, carry=c, kernel="scan"))(params, xs, carry)
    chex.assert_trees_all_equal(on_auto, on_scan)  # differentiated: the scan's program, values too


def test_auto_trains_on_onednn_from_its_training_threshold(monkeypatch):
    """``auto`` at H >= ``TRAIN_FROM_HIDDEN``: oneDNN's forward and backward, as ``kernel="onednn"``."""
    monkeypatch.setattr(kernel_layer, "FORWARD_FROM_HIDDEN", H)
    monkeypatch.setattr(kernel_layer, "TRAIN_FROM_HIDDEN", H)
    params = _layer("gru")
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    carry = _carry(params, (B,))
    on_auto = _loss_and_outputs(lambda p, x, c: recurrax.rnn(p, x, carry=c))(params, xs, carry)
    on_kernel = _loss_and_outputs(lambda p, x, c: recurrax.rnn(p, x, carry=c, kernel="onednn"))(params, xs, carry)
    chex.assert_trees_all_equal(on_auto, on_kernel)


@pytest.mark.parametrize("name", ["elman_tanh", "lstm"])
def test_auto_keeps_the_scan_where_the_kernel_was_measured_slower(name):
    params = _layer(name)  # Elman at any size; LSTM at H = 5 < 256
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    chex.assert_trees_all_equal(recurrax.rnn(params, xs), recurrax.rnn(params, xs, kernel="scan"))
    assert kernel_layer.slower_here(params) is not None


# --------------------------------------------------------------------------- fallbacks


def _user_cell():
    return recurrax.init_rnn(jax.random.key(0), "mingru", D, H)


FALLBACKS = {
    # name: (params, rnn options, a phrase of the reason)
    "user_or_other_cell": (_user_cell, {}, "no 'mingru' cell"),
    "peephole_lstm": (lambda: recurrax.init_rnn(jax.random.key(0), "lstm", D, H, peephole=True), {}, "peephole"),
    "identity_elman": (lambda: recurrax.init_rnn(jax.random.key(0), "elman", D, H, activation="identity"), {},
                       "tanh, relu and sigmoid"),
    "mask": (lambda: _layer("gru"), {"mask": jnp.ones((B, T), bool)}, "mask"),
    "lstm_with_lengths": (lambda: _layer("lstm"), {"lengths": jnp.array([T, 2, 1])}, "cell state"),
    "unroll": (lambda: _layer("lstm"), {"unroll": 2}, "unroll is an option of the scan"),
    "remat": (lambda: _layer("lstm"), {"remat": True}, "remat"),
    "return_carries": (lambda: _layer("gru"), {"return_carries": True}, "return_carries"),
    "fused_backward": (lambda: _layer("lstm"), {"fused_backward": False}, "fused_backward"),
    "compute_dtype": (lambda: _layer("lstm"), {"compute_dtype": jnp.bfloat16}, "compute_dtype"),
}


@pytest.mark.parametrize("name", FALLBACKS)
def test_each_documented_fallback_runs_the_scan_or_refuses_with_its_reason(name):
    make, options, reason = FALLBACKS[name]
    params = make()
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    with pytest.raises(ValueError, match=f"kernel='onednn' cannot run this call: .*{reason}"):
        recurrax.rnn(params, xs, kernel="onednn", **options)
    auto, scan = (recurrax.rnn(params, xs, kernel=kernel, **options) for kernel in ("auto", "scan"))
    chex.assert_trees_all_equal(auto, scan)  # the very same path


def test_float64_falls_back_to_the_scan():
    with jax.enable_x64(True):
        params = recurrax.init_rnn(jax.random.key(0), "lstm", D, H, dtype=jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float64)
        with pytest.raises(ValueError, match="float32 only; this call has float64"):
            recurrax.rnn(params, xs, kernel="onednn")
        chex.assert_trees_all_equal(recurrax.rnn(params, xs), recurrax.rnn(params, xs, kernel="scan"))


def test_an_empty_batch_falls_back_and_a_parallel_method_excludes_the_kernel():
    params = _layer("gru")
    with pytest.raises(ValueError, match="empty batch"):
        recurrax.rnn(params, jnp.ones((0, T, D)), kernel="onednn")
    assert recurrax.rnn(params, jnp.ones((0, T, D)))[1].shape == (0, T, H)
    with pytest.raises(ValueError, match="kernel='onednn' runs the layer step by step; method='deer'"):
        recurrax.rnn(params, jnp.ones((B, T, D)), kernel="onednn", method="deer")
    with pytest.raises(ValueError, match=r"Expected kernel in \['auto', 'scan', 'onednn'\], got 'cudnn'"):
        recurrax.rnn(params, jnp.ones((B, T, D)), kernel="cudnn")


# --------------------------------------------------------------------------- transformations


def test_forward_mode_autodiff_runs_the_scan_at_the_defaults(monkeypatch):
    monkeypatch.setattr(kernel_layer, "FORWARD_FROM_HIDDEN", H)  # "auto" would take the kernel here
    params = _layer("lstm")
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    tangent = jax.random.normal(jax.random.key(2), xs.shape)
    f_auto = lambda x: recurrax.rnn(params, x)[1]
    f_scan = lambda x: recurrax.rnn(params, x, kernel="scan", fused_backward=False)[1]
    expected = jax.jvp(f_scan, (xs,), (tangent,))
    chex.assert_trees_all_close(jax.jvp(f_auto, (xs,), (tangent,)), expected, **TOL)
    chex.assert_trees_all_close(jax.jit(lambda x, t: jax.jvp(f_auto, (x,), (t,)))(xs, tangent), expected, **TOL)
    chex.assert_trees_all_close(jax.jacfwd(lambda x: f_auto(x)[0, -1])(xs), jax.jacfwd(lambda x: f_scan(x)[0, -1])(xs),
                                **TOL)
    with recurrax.forward_mode():
        _, linear = jax.linearize(f_auto, xs)
    chex.assert_trees_all_close(linear(tangent), expected[1], **TOL)
    for options, chosen in (({"kernel": "onednn"}, "kernel='onednn'"), ({"fused_backward": True}, "fused_backward=True")):
        with pytest.raises(ValueError, match=f"cannot pass {chosen}.*kernel='scan', fused_backward=False"):
            jax.jvp(lambda x: recurrax.rnn(params, x, **options)[1], (xs,), (tangent,))


def test_hessian_free_trains_a_layer_at_its_defaults(monkeypatch):
    """Issue 27 item 1: HF's Gauss–Newton products need forward mode through ``rnn``'s defaults."""
    monkeypatch.setattr(kernel_layer, "FORWARD_FROM_HIDDEN", H)  # "auto" would take the kernel here
    from recurrax.hessian_free import HessianFree

    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"rnn": recurrax.init_rnn(k1, "lstm", D, H), "out": recurrax.init_dense(k2, H, 2)}

    def model(kernel):
        def model_fn(p, xs):
            _, hs = recurrax.rnn(p["rnn"], xs, kernel=kernel)
            return recurrax.dense(p["out"], hs), hs
        return model_fn

    batch = (jax.random.normal(jax.random.key(1), (B, T, D)), jax.random.normal(jax.random.key(2), (B, T, 2)))
    steps = {}
    for kernel in ("auto", "scan"):
        hf = HessianFree(model(kernel), "squared_error", max_cg_iters=5)
        state, metrics = hf.step(hf.init(params, jax.random.key(0)), batch)
        steps[kernel] = (state.params, metrics["loss"], metrics["new_loss"])
    chex.assert_trees_all_close(steps["auto"], steps["scan"], rtol=1e-4, atol=1e-5)
    assert float(steps["auto"][2]) < float(steps["auto"][1])


def test_vmap_over_a_batch_axis_equals_the_batched_call():
    params = _layer("lstm")
    xs = jax.random.normal(jax.random.key(1), (2, B, T, D))
    final, ys = jax.vmap(lambda x: recurrax.rnn(params, x, kernel="onednn"))(xs)
    expected = recurrax.rnn(params, xs, kernel="scan")
    chex.assert_trees_all_close((final, ys), expected, **TOL)
    vmapped = jax.grad(lambda x: jnp.sum(jax.vmap(lambda x: recurrax.rnn(params, x, kernel="onednn")[1])(x) ** 2))
    batched = jax.grad(lambda x: jnp.sum(recurrax.rnn(params, x, kernel="scan")[1] ** 2))
    chex.assert_trees_all_close(vmapped(xs), batched(xs), **TOL)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", ["feature_size", "carry_shape", "lengths_shape", "lengths_dtype"])
def test_bad_input_gets_the_scans_error(bad):
    params = _layer("gru")
    xs, options = jnp.ones((B, T, D)), {}
    if bad == "feature_size":
        xs = jnp.ones((B, T, D + 1))
    elif bad == "carry_shape":
        options["carry"] = recurrax.gru.GRUCarry(h=jnp.zeros((B + 1, H)))
    elif bad == "lengths_shape":
        options["lengths"] = jnp.array([T, T])
    else:
        options["lengths"] = jnp.array([1.0, 2.0, 3.0])
    messages = []
    for kernel in ("scan", "auto"):
        with pytest.raises(ValueError) as error:
            recurrax.rnn(params, xs, kernel=kernel, **options)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
