"""Hessian-free optimisation with structural damping (Martens 2010; Martens & Sutskever 2011).

Each step minimises the damped quadratic model of the objective ``f`` around ``θ`` by
conjugate gradient (CG), never forming a matrix:

    q(δ) = gᵀδ + ½ δᵀ G δ                         (the model; g = ∇f on the gradient batch)
    δ* ≈ argmin  q(δ) + ½ λ ‖δ‖² + λ μ S(δ)       (Tikhonov λ, structural damping μ)
    G v = Jᵀ H_L J v  (Gauss–Newton: J the Jacobian of the outputs, H_L the loss's Hessian)
    S(δ) ≈ ½ δᵀ J_hᵀ H_D J_h δ                    (D(h(θ+δ), h(θ)) to second order)

``G v`` is one ``jax.jvp``-style linear pass and one transposed pass (``jax.linearize`` and
``jax.linear_transpose``, so the forward residuals are computed once per step and shared by
every CG iteration). The curvature batch is separate from (and usually smaller than) the
gradient batch. After CG: backtracking over its saved iterates, the Levenberg–Marquardt ratio
``ρ = (f(θ+δ) − f(θ)) / q(δ)`` adapts λ (×3/2 if ρ < ¼, ×2/3 if ρ > ¾), and an Armijo line
search (c = 10⁻², shrink 0.8, at most 60 times) sets the step size.

These defaults follow Martens' (2010) MATLAB code. Martens & Sutskever's released RNN code
(github.com/barapa/HF-RNN) differs around the same step, and each difference is an option:
``rho="damped"`` (ρ's model includes λ and λμ G_S, and its loss change is taken on the
curvature batch), ``backtracking="minimum"`` with ``save_every=10`` (the best of every 10th CG
iterate, not a walk back from the last), ``line_search="decrease"`` (any decrease passes; a
rejected step restarts the next CG from 0), ``l2=2e-5`` (weight decay in the loss, gradient and
curvature), and ``step(state, batch, curvature_batch, backtracking_batch, line_search_batch)``
to score the backtracking and the line search on rows of their own. ``python -m experiments
mitigations --preset paper`` runs that recipe on the pathological problems.

The objective is a sum over a sequence's scored positions, averaged over sequences (as in
Martens' code): ``f(θ) = (1/B) Σ_{b,t} w_bt ℓ(z_bt, y_bt)`` with ``z = model_fn(θ, x)[0]`` of
shape ``(B, ..., C)`` and per-position weights ``w`` of shape ``(B, ...)`` (a mask: only the
last step, padding). Losses and their matching Hessians ``H_L`` (per position, over ``C``):

- ``"softmax_cross_entropy"``: ``−Σ_c y_c log softmax(z)_c``, ``H = diag(p) − p pᵀ``; targets
  integer classes ``(B, ...)`` or distributions ``(B, ..., C)``;
- ``"squared_error"``: ``½ ‖z − y‖²``, ``H = I``;
- ``"logistic"`` (sigmoid cross-entropy): ``Σ_c softplus(z_c) − y_c z_c``, ``H = diag(σ(1 − σ))``.

Structural damping (Martens & Sutskever 2011): ``model_fn(params, inputs)`` returns
``(outputs, hiddens)``, ``hiddens`` any pytree of hidden states with leading axis ``B`` (e.g. an
RNN's ``(B, T, H)`` trajectory, zero at padded steps). ``D`` is the hidden units' own matching
loss, summed over units and steps and divided by ``B`` like ``f``; its Gauss–Newton matrix
``J_hᵀ H_D J_h`` enters the CG matrix with weight ``λμ``. ``hidden_loss``:

- ``"tanh"`` (default; the paper's tanh units): the matching loss of ``h = tanh(a)`` is the
  cross-entropy of ``(h + 1)/2``, whose Hessian in the pre-activation ``a`` is ``1 − h²``, so
  ``G_S = J_aᵀ diag(1 − h²) J_a = J_hᵀ diag(1/(1 − h²)) J_h``. It is computed from ``h``
  alone (no pre-activations needed), and a saturated unit (``1 − h² = 0`` in floating point,
  where ``J_h v = 0`` as well) contributes 0, its exact limit. It penalises a change of a
  unit by how far it moves the unit's *input*, so saturated units may move, and it is bounded
  where the squared distance on ``h`` is not informative.
- ``"logistic"``: sigmoid units, ``G_S = J_hᵀ diag(1/(h(1 − h))) J_h``;
- ``"squared_error"``: ``D = ½‖Δh‖²``, ``G_S = J_hᵀ J_h`` (any units, e.g. LSTM outputs).

Everything runs inside one ``jax.jit``: CG is a ``lax.while_loop`` stopped by Martens' relative
progress rule, warm-started from the last solution times 0.95, optionally preconditioned by
Martens' diagonal ``(diag(mean_i ∇f_i²) + λ)^0.75`` (per-example gradients ``∇f_i`` on the
gradient batch). Params are any pytree of float arrays (float32 or float64).

The model is differentiated in forward mode (``J v``). ``HessianFree`` linearises ``model_fn``
inside ``recurrax.forward_mode()``, so recurrax layers at their defaults take the path forward
mode can enter (the scan with plain autodiff, not the oneDNN kernel or the fused backward pass,
whose gradients are ``custom_vjp`` rules); a ``custom_vjp`` of the user's own, or a layer given
``kernel="onednn"`` or ``fused_backward=True``, gets a ``ValueError`` that says so.

>>> import recurrax
>>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
>>> params = {"rnn": recurrax.init_rnn(k1, "elman", 2, 8), "out": recurrax.init_dense(k2, 8, 1)}
>>> def model_fn(p, xs):
...     _, hs = recurrax.rnn(p["rnn"], xs, fused_backward=False)  # (B, T, H) tanh states
...     return recurrax.dense(p["out"], hs[:, -1]), hs              # (B, 1), (B, T, H)
>>> task = recurrax.tasks.adding_problem(k3, 16, 10)
>>> batch = (task.xs, task.targets[:, -1])
>>> hf = HessianFree(model_fn, "squared_error", structural_damping=0.3, max_cg_iters=20)
>>> state = hf.init(params)
>>> state, metrics = hf.step(state, batch)
>>> bool(metrics["new_loss"] <= metrics["loss"])
True

References: J. Martens, "Deep learning via Hessian-free optimization", ICML 2010. J. Martens
and I. Sutskever, "Learning recurrent neural networks with Hessian-free optimization", ICML 2011.
"""

from recurrax.training.hessian_free._cg import CGResult as CGResult
from recurrax.training.hessian_free._cg import conjugate_gradient as conjugate_gradient
from recurrax.training.hessian_free._cg import save_schedule as save_schedule
from recurrax.training.hessian_free._losses import HIDDEN_LOSSES as HIDDEN_LOSSES
from recurrax.training.hessian_free._losses import LOSSES as LOSSES
from recurrax.training.hessian_free._optimizer import HessianFree as HessianFree
from recurrax.training.hessian_free._optimizer import HFState as HFState

__all__ = [
           "HIDDEN_LOSSES",
           "LOSSES",
           "CGResult",
           "HFState",
           "HessianFree",
           "conjugate_gradient",
           "save_schedule",
]
