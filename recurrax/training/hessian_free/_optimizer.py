"""The Hessian-free optimiser: one jitted step over a ``TrainState`` (see ``recurrax.hessian_free``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from recurrax._layers import forward_mode as layers_in_forward_mode
from recurrax.training._train import TrainState
from recurrax.training.hessian_free._cg import _add, _dot, _scale, conjugate_gradient
from recurrax.training.hessian_free._losses import HIDDEN_LOSSES, LOSSES, _choice

ModelFn = Callable[[Any, Any], tuple]  # (params, inputs) -> (outputs (B, ..., C), hiddens pytree)


class HFState(NamedTuple):
    """Hessian-free state, kept in ``TrainState.opt_state``."""

    damping: jax.Array  # () params' dtype: Tikhonov λ for the next step
    previous_solution: Any  # like params: the last CG iterate of the previous step (warm start)
    cg_iterations: jax.Array  # () int32: CG iterations done so far (the cost, in G v products)


def _positive(value: Any, name: str, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise ValueError(f"Expected {name} > 0{' (an integer)' if integer else ''}, got {value!r}.")
    return value


def _unpack(batch: Any) -> tuple[Any, jax.Array, jax.Array | None]:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        got = (f"a sequence of {len(batch)}" if isinstance(batch, (tuple, list))
               else f"an array of shape {batch.shape}" if hasattr(batch, "shape") else type(batch).__name__)
        raise ValueError(
            f"Expected a batch (inputs, targets) or (inputs, targets, weights) (a recurrax.tasks.Task "
            f"works), got {got}."
        )
    return batch[0], batch[1], (batch[2] if len(batch) == 3 else None)


@contextlib.contextmanager
def _forward_mode():
    """Turn jax's error for a ``custom_vjp`` under ``jvp`` into one that names the fix."""
    try:
        yield
    except TypeError as error:
        if "custom_vjp" not in str(error):
            raise
        raise ValueError(
            "Expected model_fn to be differentiable in forward mode (G v = Jᵀ H J v needs J v), got "
            "a custom_vjp function inside it (recurrax layers at their defaults take a path forward mode "
            "can enter: drop kernel='onednn' or fused_backward=True)."
        ) from error


class HessianFree:
    """Hessian-free optimiser for ``model_fn(params, inputs) -> (outputs, hiddens)``.

    ``hf.init(params)`` gives a ``TrainState`` whose ``opt_state`` is an ``HFState``;
    ``hf.step(state, batch, curvature_batch=None) -> (state, metrics)`` is one jitted update,
    so ``recurrax.fit(state, hf.step, batches)`` drives it (progress bar, checkpoints). A batch
    is ``(inputs, targets)`` or ``(inputs, targets, weights)`` (``recurrax.tasks.Task`` is one).
    Without ``curvature_batch`` the curvature uses the first ``curvature_batch_size`` sequences
    of ``batch``. See the module docstring for the objective, losses and structural damping.

    Args:
      model_fn: ``(params, inputs) -> (outputs (B, ..., C), hiddens)``; ``hiddens`` may be
        ``None`` when ``structural_damping`` is 0.
      loss: ``"softmax_cross_entropy"``, ``"squared_error"`` or ``"logistic"``.
      structural_damping: μ ≥ 0; the hidden-state damping weight is λμ; 0 is plain HF (Martens
        2010). Default 0.3, measured: ``python -m experiments mitigations`` (32 tanh units,
        addition and temporal order, 5 seeds) solves 0.5 of the runs at T = 50 and 100 with
        μ = 0.3 and none with μ = 0. Between 0.3 and 1 the evidence is weak: tanh RNN (H = 16,
        orthogonal ``W_h``), temporal order at T = 50, 80 updates of 200 sequences, seeds 0-2:
        μ = 0 left all three at 75-76% wrong, μ = 0.3 solved one (0.4%), μ = 1 none (43% at best).
      hidden_loss: the matching loss ``D`` of the hidden units: ``"tanh"``, ``"logistic"``,
        ``"squared_error"``.
      initial_damping: λ₀ > 0. Default 1: the objective is a per-sequence sum, so ``G`` is O(1).
      min_cg_iters, max_cg_iters: CG iteration bounds (Martens 2010: at most 250).
      cg_tolerance: ε of the relative-progress rule (5e-4, Martens 2010).
      cg_decay: the warm start is ``cg_decay`` times the previous step's last CG iterate (0.95).
      preconditioner: use Martens' diagonal ``(diag(mean_i ∇f_i²) + λ)^preconditioner_exponent``,
        one per-example gradient per sequence of the gradient batch (memory: B × params).
      curvature_batch_size: sequences of ``batch`` for the curvature (None: all of them).
      max_line_search_steps: shrink the step by 0.8 at most this many times (0: no search)
        until it passes ``line_search``'s test; if none passes, the step size is 0.
      l2: weight decay: the objective is ``f(θ) + ½ l2 ‖θ‖²`` (gradient ``+ l2 θ``, curvature
        ``G + l2 I``). Default 0; Martens & Sutskever's released code uses 2e-5.
      rho: the Levenberg–Marquardt ratio's model. ``"undamped"`` (default, Martens' MATLAB):
        ``ρ = (f(θ+δ) − f(θ)) / (gᵀδ + ½ δᵀGδ)`` on the gradient batch's loss. ``"damped"``
        (Martens & Sutskever's released RNN code): the loss change on the *curvature* batch over
        the damped model ``gᵀδ + ½ δᵀ(G + λI + λμ G_S)δ``, which is smaller in size, so ρ is
        larger and λ falls sooner.
      backtracking: how the step is chosen among CG's kept iterates. ``"walk_back"`` (default,
        Martens 2010): from the last, go back while the loss does not rise. ``"minimum"`` (the
        released RNN code): the iterate with the lowest loss of all.
      save_every: which CG iterates are kept: 0 (default) ``⌈1.3^j⌉`` (Martens 2010); ``k > 0``
        every k-th from the first, 1, 1 + k, … (the released RNN code: 10); the last always.
      line_search: ``"armijo"`` (default, Martens' MATLAB: ``f(θ + rδ) ≤ f(θ) + 10⁻² r gᵀδ``)
        or ``"decrease"`` (the released RNN code: any ``f(θ + rδ) < f(θ)``; when no step
        passes, the next warm start is 0 instead of the last CG iterate).

    ``step(state, batch, curvature_batch=None, backtracking_batch=None, line_search_batch=None)``:
    backtracking and the line search score the loss on their own batches when given (the
    released RNN code draws a separate batch for each, so the step is not fitted to the data it
    is judged on), else on ``batch``.

    ``state.key`` is carried unchanged: the step draws no random numbers.

    ``metrics``: ``loss`` (before the update) and ``grad_norm`` (what ``fit`` shows),
    ``new_loss``, ``damping`` (the λ this step used), ``rho``, ``cg_iterations``,
    ``cg_chosen`` (the iteration backtracking chose), ``step_size``, ``line_search_steps``.
    """

    def __init__(
        self,
        model_fn: ModelFn,
        loss: str,
        *,
        structural_damping: float = 0.3,
        hidden_loss: str = "tanh",
        initial_damping: float = 1.0,
        min_cg_iters: int = 1,
        max_cg_iters: int = 250,
        cg_tolerance: float = 5e-4,
        cg_decay: float = 0.95,
        preconditioner: bool = False,
        preconditioner_exponent: float = 0.75,
        curvature_batch_size: int | None = None,
        max_line_search_steps: int = 60,
        l2: float = 0.0,
        rho: str = "undamped",
        backtracking: str = "walk_back",
        save_every: int = 0,
        line_search: str = "armijo",
    ):
        if not callable(model_fn):
            raise TypeError(
                f"Expected model_fn to be callable (params, inputs) -> (outputs, hiddens), got {model_fn!r}."
            )
        self.model_fn = model_fn
        self.loss_name = _choice(loss, LOSSES, "loss", "losses with a known matching Gauss–Newton curvature")
        self.hidden_loss = _choice(hidden_loss, HIDDEN_LOSSES, "hidden_loss", "the hidden units' matching loss")
        if isinstance(structural_damping, bool) or not isinstance(structural_damping, (int, float)) \
                or not structural_damping >= 0:
            raise ValueError(f"Expected structural_damping >= 0 (μ), got {structural_damping!r}.")
        self.structural_damping = float(structural_damping)
        self.initial_damping = float(_positive(initial_damping, "initial_damping (λ₀)"))
        self.min_cg_iters = _positive(min_cg_iters, "min_cg_iters", integer=True)
        self.max_cg_iters = _positive(max_cg_iters, "max_cg_iters", integer=True)
        if self.min_cg_iters > self.max_cg_iters:
            raise ValueError(f"Expected min_cg_iters <= max_cg_iters, got {min_cg_iters} > {max_cg_iters}.")
        self.cg_tolerance = float(_positive(cg_tolerance, "cg_tolerance"))
        if isinstance(cg_decay, bool) or not isinstance(cg_decay, (int, float)) or not 0 <= cg_decay <= 1:
            raise ValueError(f"Expected cg_decay in [0, 1], got {cg_decay!r}.")
        self.cg_decay = float(cg_decay)
        self.preconditioner = bool(preconditioner)
        self.preconditioner_exponent = float(_positive(preconditioner_exponent, "preconditioner_exponent"))
        if curvature_batch_size is not None:
            _positive(curvature_batch_size, "curvature_batch_size", integer=True)
        self.curvature_batch_size = curvature_batch_size
        if isinstance(max_line_search_steps, bool) or not isinstance(max_line_search_steps, int) \
                or max_line_search_steps < 0:
            raise ValueError(f"Expected max_line_search_steps >= 0 (an integer), got {max_line_search_steps!r}.")
        self.max_line_search_steps = max_line_search_steps
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 >= 0:
            raise ValueError(f"Expected l2 >= 0 (weight decay), got {l2!r}.")
        self.l2 = float(l2)
        self.rho = _choice(rho, ("undamped", "damped"), "rho", "the model ρ divides by")
        self.backtracking = _choice(backtracking, ("walk_back", "minimum"), "backtracking",
                                    "how CG's kept iterates are searched")
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 0:
            raise ValueError(f"Expected save_every >= 0 (an integer; 0: the 1.3^j schedule), got {save_every!r}.")
        self.save_every = save_every
        self.line_search = _choice(line_search, ("armijo", "decrease"), "line_search",
                                   "the line search's acceptance test")
        self.step = jax.jit(self._step)

    def __repr__(self) -> str:
        return (f"HessianFree(loss={self.loss_name!r}, structural_damping={self.structural_damping}, "
                f"hidden_loss={self.hidden_loss!r}, max_cg_iters={self.max_cg_iters})")

    # ----------------------------------------------------------------- pieces

    def _forward(self, params: Any, inputs: Any, need_hiddens: bool) -> tuple[jax.Array, Any]:
        out = self.model_fn(params, inputs)
        if not isinstance(out, tuple) or len(out) != 2:
            raise ValueError(
                f"Expected model_fn(params, inputs) to return (outputs, hiddens), got {type(out).__name__}."
            )
        outputs, hiddens = out
        if not hasattr(outputs, "ndim") or outputs.ndim < 2 or not jnp.issubdtype(outputs.dtype, jnp.floating):
            raise ValueError(
                "Expected model_fn's outputs to be a float array (B, ..., C), got "
                f"{getattr(outputs, 'shape', type(outputs).__name__)} {getattr(outputs, 'dtype', '')}."
            )
        if need_hiddens and not jax.tree.leaves(hiddens):
            raise ValueError(
                f"structural_damping={self.structural_damping} needs the hidden states: expected model_fn "
                f"to return (outputs, hiddens) with hiddens a non-empty pytree, got hiddens={hiddens!r} "
                "(use structural_damping=0 for a model without hidden states)."
            )
        return outputs, hiddens

    def _targets(self, outputs: jax.Array, targets: Any, weights: Any) -> tuple[jax.Array, jax.Array | None]:
        targets = jnp.asarray(targets)
        classes = self.loss_name == "softmax_cross_entropy" and jnp.issubdtype(targets.dtype, jnp.integer)
        expected = outputs.shape[:-1] if classes else outputs.shape
        if targets.shape != expected:
            kind = "integer classes" if classes else "targets shaped like the outputs"
            raise ValueError(f"Expected {kind} of shape {expected} for outputs {outputs.shape} "
                             f"and loss {self.loss_name!r}, got targets of shape {targets.shape}.")
        if not classes:
            targets = targets.astype(outputs.dtype)
        if weights is not None:
            weights = jnp.asarray(weights)
            if weights.shape != outputs.shape[:-1]:
                raise ValueError(f"Expected weights of shape {outputs.shape[:-1]} (the outputs' positions), "
                                 f"got {weights.shape}.")
            weights = weights.astype(outputs.dtype)
        return targets, weights

    def loss(self, params: Any, batch: Any) -> jax.Array:
        """``f(θ) = (1/B) Σ_{b,t} w_bt ℓ(z_bt, y_bt) + ½ l2 ‖θ‖²`` on ``batch``: a () scalar."""
        inputs, targets, weights = _unpack(batch)
        outputs, _ = self._forward(params, inputs, False)
        targets, weights = self._targets(outputs, targets, weights)
        per_position = LOSSES[self.loss_name][0](outputs, targets)
        if weights is not None:
            per_position = per_position * weights
        value = jnp.sum(per_position) / outputs.shape[0]
        return value + 0.5 * self.l2 * _dot(params, params) if self.l2 else value

    def _curvature(self, params: Any, batch: Any, with_hiddens: bool) -> Callable[[Any, Any], Any]:
        """``v, ω -> G v + ω G_S v`` on ``batch``, linearised once (residuals shared by all calls)."""
        inputs, targets, weights = _unpack(batch)

        def outputs_of(p):
            outputs, hiddens = self._forward(p, inputs, with_hiddens)
            return (outputs, hiddens) if with_hiddens else outputs

        with _forward_mode(), layers_in_forward_mode():  # recurrax layers: the path J v can enter
            primal, jvp = jax.linearize(outputs_of, params)
        transpose = jax.linear_transpose(jvp, params)
        outputs, hiddens = primal if with_hiddens else (primal, None)
        targets, weights = self._targets(outputs, targets, weights)
        hvp, hidden_hvp, batch_size = LOSSES[self.loss_name][1], HIDDEN_LOSSES[self.hidden_loss], outputs.shape[0]

        def product(v, hidden_weight):
            with _forward_mode():  # jax reports a custom_vjp here, when J v is first traced
                tangent = jvp(v)
            z_dot = tangent[0] if with_hiddens else tangent
            ct = hvp(outputs, targets, z_dot) / batch_size
            if weights is not None:
                ct = ct * weights[..., None]
            if with_hiddens:
                ct = (ct, jax.tree.map(
                    lambda h, u: jnp.asarray(hidden_weight, h.dtype) * hidden_hvp(h, u) / batch_size,
                    hiddens, tangent[1]))
            gv = transpose(ct)[0]
            return _add(gv, v, self.l2) if self.l2 else gv

        return product

    def gauss_newton_product(self, params: Any, batch: Any, vector: Any, *, hidden_weight: float = 0.0) -> Any:
        """``G v + hidden_weight · G_S v`` on ``batch`` (undamped; ``G_S`` the hidden curvature).

        ``G = (1/B) Σ_{b,t} w_bt J_btᵀ H_L J_bt + l2 I`` over the outputs and ``G_S = (1/B)
        J_hᵀ H_D J_h`` over every hidden state; the CG matrix of a step is ``G + λI + λμ G_S``.
        """
        with_hiddens = hidden_weight != 0
        return self._curvature(params, batch, with_hiddens)(vector, hidden_weight)

    def _preconditioner(self, params: Any, batch: Any, damping: jax.Array) -> Any:
        inputs, targets, weights = _unpack(batch)

        def example_gradient(x, y, w):
            one = jax.tree.map(lambda a: a[None], (x, y) if w is None else (x, y, w))
            return jax.grad(self.loss)(params, one)  # B = 1: the sequence's own loss f_i

        grads = jax.vmap(example_gradient)(inputs, targets, weights)
        return jax.tree.map(
            lambda g: (jnp.mean(g**2, axis=0) + damping) ** self.preconditioner_exponent, grads)

    def _curvature_rows(self, batch: Any) -> Any:
        n = self.curvature_batch_size
        if n is None:
            return batch
        size = jax.tree.leaves(batch[0])[0].shape[0]
        if n > size:
            raise ValueError(f"Expected a batch of at least curvature_batch_size={n} sequences, got {size}.")
        parts = [jax.tree.map(lambda a: a[:n], part) for part in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else tuple(parts)  # a Task stays a Task

    # ----------------------------------------------------------------- public

    def init(self, params: Any, key: jax.Array | None = None) -> TrainState:
        """A ``TrainState`` at step 0 with λ = ``initial_damping`` and a zero warm start."""
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        for path, leaf in leaves:
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ValueError(f"Expected params with float leaves only, got {jnp.result_type(leaf)} at "
                                 f"params{jax.tree_util.keystr(path)}.")
        if not leaves:
            raise ValueError("Expected params with at least one float array, got an empty pytree.")
        dtype = jnp.result_type(leaves[0][1])
        opt_state = HFState(jnp.asarray(self.initial_damping, dtype), jax.tree.map(jnp.zeros_like, params),
                            jnp.zeros((), jnp.int32))
        key = jax.random.key(0) if key is None else key
        return TrainState(params=params, opt_state=opt_state, step=jnp.zeros((), jnp.int32), key=key)

    def _step(self, state: TrainState, batch: Any, curvature_batch: Any = None, backtracking_batch: Any = None,
              line_search_batch: Any = None) -> tuple[TrainState, dict]:
        """One update (jitted as ``hf.step``): gradient, CG on ``G + λI + λμ G_S``, backtracking,
        the λ update from ρ, the line search. Returns ``(state, metrics)``."""
        if not isinstance(state.opt_state, HFState):
            raise TypeError(f"Expected a state from HessianFree.init (opt_state an HFState), "
                             f"got opt_state of type {type(state.opt_state).__name__}.")
        params, damping = state.params, state.opt_state.damping
        curvature_batch = self._curvature_rows(batch) if curvature_batch is None else curvature_batch
        backtracking_batch = batch if backtracking_batch is None else backtracking_batch
        line_search_batch = batch if line_search_batch is None else line_search_batch
        loss, grad = jax.value_and_grad(self.loss)(params, batch)

        structural = self.structural_damping > 0
        product = self._curvature(params, curvature_batch, structural)
        hidden_weight = damping * self.structural_damping if structural else 0.0

        def matvec(v):  # (G + λI + λμ G_S) v
            return _add(product(v, hidden_weight), v, damping)

        precondition = self._preconditioner(params, batch, damping) if self.preconditioner else None
        cg = conjugate_gradient(
            matvec, grad, _scale(state.opt_state.previous_solution, self.cg_decay), preconditioner=precondition,
            min_iters=self.min_cg_iters, max_iters=self.max_cg_iters, tolerance=self.cg_tolerance,
            save_every=self.save_every)

        def loss_at(delta, rate=1.0, on=batch):  # NaN counts as +∞: worse than any number
            value = self.loss(_add(params, delta, rate), on)
            return jnp.where(jnp.isnan(value), jnp.inf, value)

        def iterate(j):
            return jax.tree.map(lambda s: s[j], cg.saved)

        last = cg.num_saved - 1
        if self.backtracking == "walk_back":
            # Martens (2010): from the last kept iterate go back while f does not rise.
            def back(c):
                j, best, f_best, _ = c
                f_prev = loss_at(iterate(j - 1), on=backtracking_batch)
                better = f_prev <= f_best
                return j - 1, jnp.where(better, j - 1, best), jnp.where(better, f_prev, f_best), better

            first = (last, last, loss_at(iterate(last), on=backtracking_batch), jnp.ones((), bool))
            _, best, f_best, _ = lax.while_loop(lambda c: c[3] & (c[0] > 0), back, first)
        else:  # "minimum": the lowest loss of all kept iterates (the first of equals)
            def better(j, c):
                f_j = loss_at(iterate(j), on=backtracking_batch)
                return jnp.where(f_j < c[1], j, c[0]), jnp.minimum(f_j, c[1])

            best, f_best = lax.fori_loop(0, cg.num_saved, better,
                                         (jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, loss.dtype)))
        delta = iterate(best)
        f_step = f_best if backtracking_batch is batch else loss_at(delta)

        # Levenberg–Marquardt: ρ = the loss's change over the model's.
        slope = _dot(grad, delta)
        if self.rho == "undamped":  # q(δ) = gᵀδ + ½ δᵀGδ, against the gradient batch's loss
            predicted = slope + 0.5 * _dot(delta, product(delta, 0.0))
            change = f_step - loss
            scale = loss
        else:  # "damped": gᵀδ + ½ δᵀ(G + λI + λμ G_S)δ, against the curvature batch's loss
            predicted = slope + 0.5 * _dot(delta, matvec(delta))
            f_curvature = self.loss(params, curvature_batch)
            change = loss_at(delta, on=curvature_batch) - f_curvature
            scale = f_curvature
        rho = jnp.where(predicted < 0, change / jnp.where(predicted < 0, predicted, -1.0), -jnp.inf)
        # A predicted decrease below the loss's float resolution makes f(θ+δ) − f(θ) rounding
        # noise (ρ = 0 or worse), which would raise λ for ever (measured: 10²⁸ after 200 float32
        # updates). Such a step is tiny, where the quadratic model is exact: take ρ = 1.
        resolution = 16 * jnp.finfo(loss.dtype).eps * jnp.maximum(jnp.abs(scale), jnp.finfo(loss.dtype).tiny)
        rho = jnp.where((predicted < 0) & (-predicted < resolution), jnp.ones_like(rho), rho)
        new_damping = jnp.where(rho < 0.25, damping * 1.5, jnp.where(rho > 0.75, damping * (2.0 / 3.0), damping))
        new_damping = jnp.maximum(new_damping, jnp.finfo(damping.dtype).tiny)  # never 0, even after 10⁴ drops

        # Line search: shrink by 0.8 until the step passes (Armijo, or any decrease).
        f_search = loss if line_search_batch is batch else self.loss(params, line_search_batch)
        f_first = f_step if line_search_batch is batch else loss_at(delta, on=line_search_batch)

        def passes(rate, f_rate):
            if self.line_search == "armijo":
                return f_rate <= f_search + 1e-2 * rate * slope
            return f_rate < f_search

        def shrink(c):
            rate, _, tries = c
            return rate * 0.8, loss_at(delta, rate * 0.8, on=line_search_batch), tries + 1

        one = jnp.ones((), damping.dtype)
        rate, f_rate, tries = lax.while_loop(
            lambda c: ~passes(c[0], c[1]) & (c[2] < self.max_line_search_steps), shrink,
            (one, f_first, jnp.zeros((), jnp.int32)))
        accepted = passes(rate, f_rate)
        rate = jnp.where(accepted, rate, 0.0)
        new_params = _add(params, delta, rate)
        # ``new_loss``: on the gradient batch, as ``loss``.
        f_new = jnp.where(accepted, f_rate if line_search_batch is batch else loss_at(delta, rate), loss)

        warm = cg.x
        if self.line_search == "decrease":  # the released code restarts CG from 0 after a rejected step
            warm = jax.tree.map(lambda x: jnp.where(accepted, x, jnp.zeros_like(x)), warm)
        opt_state = HFState(new_damping, warm, state.opt_state.cg_iterations + cg.iterations)
        new_state = TrainState(new_params, opt_state, state.step + 1, state.key)
        metrics = {"loss": loss, "grad_norm": jnp.sqrt(_dot(grad, grad)), "new_loss": f_new,
                   "damping": damping, "rho": rho, "cg_iterations": cg.iterations,
                   "cg_chosen": cg.saved_iterations[best], "step_size": rate, "line_search_steps": tries}
        return new_state, metrics
