"""Neural Turing Machine, NTM (Graves, Wayne & Danihelka 2014): a controller with an external memory.

A cell family like the others (``init``, ``initial_carry``, ``step``), so it runs through
``rnn``, ``stack``, truncated BPTT and ``gradient_flow`` unchanged. Sizes: D inputs, a
controller of H = ``hidden_size`` units, a memory of N = ``memory_size`` locations of
M = ``memory_width`` numbers, R read heads and W write heads (R + W addressing heads, read heads
first), shifts ``−S₀ … S₀`` (S₀ = ``shift_range``, S = 2S₀ + 1 ≤ N).

One step, row-vector form, equation numbers of the paper (everything per sequence of the batch):

    u = [x, r_{t−1}]                                     (D + R·M,) controller input
    (h_t, c_t) = LSTM(u, h_{t−1}, c_{t−1})               recurrax.lstm; or h_t = tanh(u @ W + b)
    z = h_t @ w_heads + b_heads                          per head: [k (M), β̂, ĝ, γ̂, ŝ (S)],
                                                         then per write head: [ê (M), â (M)]
    k = tanh(k̂)   β = softplus(β̂)   g = σ(ĝ)   s = softmax(ŝ)   γ = 1 + softplus(γ̂)

  addressing, for every head on the previous memory M_{t−1} and its own previous weighting w_{t−1}:

    K[u, v] = u·v / (‖u‖_ε ‖v‖_ε),   ‖u‖_ε = sqrt(u·u + ε²), ε = 1e-8         (6)
    w^c(i) = exp(β K[k, M_{t−1}(i)]) / Σ_j exp(β K[k, M_{t−1}(j)])          (5)
    w^g = g w^c + (1 − g) w_{t−1}                                            (7)
    w̃(i) = Σ_j w^g(j) s(i − j),   indices mod N, s(δ) for δ ∈ {−S₀ … S₀}     (8)
    w(i) = (w̃(i) + ε')^γ / Σ_j (w̃(j) + ε')^γ,   ε' = 1e-12                 (9)

  reading (read heads) and writing (write heads; e = σ(ê), a = tanh(â)):

    r_t = Σ_i w(i) M_{t−1}(i)                                                (2)
    M̃(i) = M_{t−1}(i) ⊙ Π_{write heads} (1 − w(i) e)                        (3)
    M_t(i) = M̃(i) + Σ_{write heads} w(i) a                                  (4)
    y_t = [h_t, r_t]                                                         (H + R·M,)

Choices, and why:

- **Order within a step.** Every head addresses the previous memory ``M_{t−1}``, the read heads
  read it, then the write heads erase and add: the order of Collier & Beel's reference
  implementation (and of pytorch-ntm). With several write heads all erasures multiply first and
  all additions follow, the paper's order-independent form (§3.2), not head after head.
- **Output.** ``y_t = [h_t, r_t]`` (``output_size(params) = H + R·M``): the controller's output
  with the fresh reads, what Graves et al. and Collier & Beel feed to the output layer. The
  readout (e.g. 8 bit logits for the copy task) is a head outside the cell
  (``recurrax.init_dense``), as for every other family, so stacks and heads see one width.
- **Stability.** Cosine similarity with ``ε`` inside the norms (finite values and gradients at a
  zero memory row); sharpening (9) is computed as ``softmax(γ · log(w̃ + ε'))``, which is the
  same quantity written stably: ``w̃ ** γ`` has a NaN derivative in ``γ`` at ``w̃ = 0`` (a softmax
  that underflowed), ``log(w̃ + ε')`` has none. Weightings sum to 1 and lie in [0, 1] by
  construction (softmaxes and convex combinations).
- **Initialisation** (Collier & Beel 2018, who found it decisive for convergence; their
  defaults are ours). ``memory_init="constant"``: every cell ``1e-6`` (``memory_constant``), not
  trained (their best); ``"learned"``: ``tanh`` of a trained ``(N, M)`` parameter;
  ``"random"``: ``tanh`` of a fixed draw from N(0, 0.5²), not trained; or an ``(N, M)`` array
  (a fixed memory of your own). ``read_init="learned"``: ``r_0 = tanh(ρ)`` with ``ρ`` trained
  (default) or ``"zeros"``. ``weighting_init="learned"``: ``w_0 = softmax(ω)`` per head with
  ``ω`` trained (default) or ``"uniform"`` (``1/N``, fixed). Learned initial values are drawn
  as Collier & Beel's ``learned_init`` (Glorot uniform of a ``1 → units`` map). Fixed ones sit in
  the params too but behind ``stop_gradient`` (their gradient is zero). ``initial_carry``
  computes the carry from the params, so layers (which call it inside the differentiated
  function) train the learned ones. The controller starts at zeros; the LSTM controller is
  ``recurrax.lstm`` (forget bias 1, orthogonal recurrent blocks), the head projection is Lecun
  normal with zero bias.

>>> import jax, jax.numpy as jnp
>>> from recurrax.cells import ntm
>>> params = ntm.init(jax.random.key(0), 9, 100, memory_size=128, memory_width=20)
>>> carry = ntm.initial_carry(params, batch_shape=(2,))
>>> carry, y = ntm.step(params, carry, jnp.ones((2, 9)))
>>> (carry.memory.shape, carry.reads.shape, carry.weightings.shape, y.shape)
((2, 128, 20), (2, 1, 20), (2, 2, 128), (2, 120))

References: A. Graves, G. Wayne and I. Danihelka, "Neural Turing Machines", arXiv:1410.5401
(2014); M. Collier and J. Beel, "Implementing Neural Turing Machines", ICANN 2018
(arXiv:1807.08518).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import initializers
from recurrax._checks import check_array, check_batch_shape, check_params_type, check_positive_int
from recurrax.cells import lstm
from recurrax.cells._common import check_number, check_sizes, lift, split_gates

__all__ = [
    "FeedForwardParams", "NTMCarry", "NTMParams", "NTMSpec", "address", "head_sizes", "init", "initial_carry",
    "input_size", "output_size", "recurrent_blocks", "step",
]

CONTROLLERS = ("lstm", "feedforward")
MEMORY_INITS = ("constant", "learned", "random")
READ_INITS = ("learned", "zeros")
WEIGHTING_INITS = ("learned", "uniform")

COSINE_EPS = 1e-8  # ε of the cosine similarity (6)
SHARPEN_EPS = 1e-12  # ε' of the sharpening (9)


@dataclasses.dataclass(frozen=True)
class NTMSpec:
    """Static structure of an NTM (pytree metadata: never a leaf, never trained)."""

    num_read_heads: int  # R
    num_write_heads: int  # W
    shift_range: int  # S₀: shifts −S₀ … S₀
    controller: str  # "lstm" or "feedforward"
    memory_init: str  # "constant", "learned", "random" (or "given": an array passed to init)
    read_init: str  # "learned" or "zeros"
    weighting_init: str  # "learned" or "uniform"


jax.tree_util.register_static(NTMSpec)


class FeedForwardParams(NamedTuple):
    """A feed-forward controller ``h = tanh(u @ w + b)``."""

    w: jax.Array  # (input_size + R·M, hidden_size)
    b: jax.Array  # (hidden_size,)


class NTMParams(NamedTuple):
    """Parameters of an NTM cell."""

    controller: Union[lstm.LSTMParams, FeedForwardParams]  # input D + R·M, H units
    w_heads: jax.Array  # (H, (R + W)·(M + 3 + S) + W·2M): head parameters from h
    b_heads: jax.Array  # ((R + W)·(M + 3 + S) + W·2M,)
    memory: jax.Array  # (N, M): initial memory (raw; see memory_init)
    reads: jax.Array  # (R, M): initial read vectors (tanh of it when learned)
    weightings: jax.Array  # (R + W, N): initial weighting logits (softmax of it), read heads first
    spec: NTMSpec  # static


class NTMCarry(NamedTuple):
    """State of an NTM: controller state, memory, last reads and every head's last weighting."""

    controller: Optional[lstm.LSTMCarry]  # LSTMCarry(h, c), each (*batch, H); None (feed-forward)
    memory: jax.Array  # (*batch, N, M)
    reads: jax.Array  # (*batch, R, M): r_{t−1}
    weightings: jax.Array  # (*batch, R + W, N): w_{t−1}, read heads first


def _learned_init(key, shape, dtype):
    """Collier & Beel's ``learned_init``: Glorot uniform of a dense map from 1 to ``prod(shape)``."""
    units = int(np.prod(shape))
    limit = np.sqrt(6.0 / (1 + units))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def _choice(value: Any, options: tuple, name: str) -> str:
    if value not in options:
        raise ValueError(f"Expected {name} in {list(options)}, got {value!r}.")
    return value


def head_sizes(params: NTMParams) -> tuple[int, int]:
    """``(A, E)``: parameters per addressing head ``M + 3 + S`` and per write head ``2M``."""
    width = params.memory.shape[-1]
    return width + 3 + 2 * params.spec.shift_range + 1, 2 * width


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    memory_size: int = 128,
    memory_width: int = 20,
    num_read_heads: int = 1,
    num_write_heads: int = 1,
    shift_range: int = 1,
    controller: str = "lstm",
    memory_init: Union[str, Any] = "constant",
    memory_constant: float = 1e-6,
    read_init: str = "learned",
    weighting_init: str = "learned",
    forget_bias: float = 1.0,
    dtype=jnp.float32,
) -> NTMParams:
    """Initialise an NTM cell (defaults: the paper's copy-task sizes, Collier & Beel's initialisation).

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and H (the controller's units).
      memory_size, memory_width: N locations of M numbers (paper: 128 × 20).
      num_read_heads: R ≥ 0; num_write_heads: W ≥ 1.
      shift_range: S₀, shifts ``−S₀ … S₀`` of the circular convolution (8); ``2S₀ + 1 ≤ N``.
      controller: ``"lstm"`` (default) or ``"feedforward"`` (one tanh layer).
      memory_init: ``"constant"`` (default), ``"learned"``, ``"random"``, or a fixed ``(N, M)``
        array (see the module docstring).
      memory_constant: the value of the constant memory (Collier & Beel: 1e-6).
      read_init: ``"learned"`` (default) or ``"zeros"``.
      weighting_init: ``"learned"`` (default) or ``"uniform"``.
      forget_bias: initial forget bias of the LSTM controller.
      dtype: parameter dtype.

    Returns:
      ``NTMParams``.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    n = check_positive_int(memory_size, "memory_size (N)")
    m = check_positive_int(memory_width, "memory_width (M)")
    if isinstance(num_read_heads, bool) or not isinstance(num_read_heads, (int, np.integer)) or num_read_heads < 0:
        raise ValueError(f"Expected num_read_heads to be an integer >= 0, got {num_read_heads!r}.")
    num_read, num_write = int(num_read_heads), check_positive_int(num_write_heads, "num_write_heads")
    if isinstance(shift_range, bool) or not isinstance(shift_range, (int, np.integer)) or shift_range < 0:
        raise ValueError(f"Expected shift_range to be an integer >= 0, got {shift_range!r}.")
    shift_range = int(shift_range)
    if 2 * shift_range + 1 > n:
        raise ValueError(
            f"Expected a shift range no wider than the memory: shifts -{shift_range}..{shift_range} are "
            f"{2 * shift_range + 1} > memory_size {n} locations (they would wrap onto each other); "
            f"use shift_range <= {(n - 1) // 2}."
        )
    _choice(controller, CONTROLLERS, "controller")
    _choice(read_init, READ_INITS, "read_init")
    _choice(weighting_init, WEIGHTING_INITS, "weighting_init")
    memory_constant = check_number(memory_constant, "memory_constant")
    k_ctrl, k_heads, k_mem, k_reads, k_weights = jax.random.split(key, 5)

    if isinstance(memory_init, str):
        _choice(memory_init, MEMORY_INITS, "memory_init")
        if memory_init == "constant":
            memory = jnp.full((n, m), memory_constant, dtype)
        elif memory_init == "learned":
            memory = _learned_init(k_mem, (n, m), dtype)
        else:
            memory = jnp.tanh(0.5 * jax.random.normal(k_mem, (n, m), dtype))
        memory_mode = memory_init
    else:
        check_array(memory_init, "memory_init")
        if tuple(memory_init.shape) != (n, m):
            raise ValueError(
                f"Expected memory_init with shape (N, M) = ({n}, {m}) (memory_size, memory_width), "
                f"got shape {tuple(memory_init.shape)}."
            )
        memory, memory_mode = jnp.asarray(memory_init, dtype), "given"

    controller_in = input_size + num_read * m
    if controller == "lstm":
        ctrl = lstm.init(k_ctrl, controller_in, hidden_size, forget_bias=forget_bias, dtype=dtype)
    else:
        ctrl = FeedForwardParams(
            w=initializers.get("lecun_normal")(k_ctrl, (controller_in, hidden_size), dtype),
            b=jnp.zeros((hidden_size,), dtype),
        )
    num_head_params = (num_read + num_write) * (m + 3 + 2 * shift_range + 1) + num_write * 2 * m
    w_heads = initializers.get("lecun_normal")(k_heads, (hidden_size, num_head_params), dtype)
    reads = _learned_init(k_reads, (num_read, m), dtype) if read_init == "learned" else jnp.zeros((num_read, m), dtype)
    if weighting_init == "learned":
        weightings = _learned_init(k_weights, (num_read + num_write, n), dtype)
    else:
        weightings = jnp.zeros((num_read + num_write, n), dtype)
    spec = NTMSpec(num_read, num_write, shift_range, controller, memory_mode, read_init, weighting_init)
    return NTMParams(
        controller=ctrl, w_heads=w_heads, b_heads=jnp.zeros((num_head_params,), dtype), memory=memory,
        reads=reads, weightings=weightings, spec=spec,
    )


def _broadcast(v: jax.Array, batch_shape: tuple) -> jax.Array:
    return jnp.broadcast_to(v, batch_shape + tuple(v.shape))


def initial_carry(params: NTMParams, batch_shape: tuple[int, ...] = ()) -> NTMCarry:
    """The starting carry from the params (learned parts trainable, fixed parts behind ``stop_gradient``).

    Controller zeros; memory ``(*batch_shape, N, M)``; reads ``(*batch_shape, R, M)``;
    weightings ``(*batch_shape, R + W, N)``.
    """
    check_params_type(params, NTMParams, "ntm.initial_carry")
    batch_shape = check_batch_shape(batch_shape)
    spec = params.spec
    memory = jnp.tanh(params.memory) if spec.memory_init == "learned" else jax.lax.stop_gradient(params.memory)
    reads = jnp.tanh(params.reads) if spec.read_init == "learned" else jax.lax.stop_gradient(params.reads)
    logits = params.weightings if spec.weighting_init == "learned" else jax.lax.stop_gradient(params.weightings)
    weightings = jax.nn.softmax(logits, axis=-1)
    if spec.controller == "lstm":
        controller = lstm.initial_carry(params.controller, batch_shape)
    else:
        controller = None
    return NTMCarry(controller, _broadcast(memory, batch_shape), _broadcast(reads, batch_shape),
                    _broadcast(weightings, batch_shape))


def input_size(params: NTMParams) -> int:
    """D, the size of ``x`` (the controller also reads the R·M numbers of the last reads)."""
    w = params.controller.w_x if isinstance(params.controller, lstm.LSTMParams) else params.controller.w
    return int(w.shape[0]) - params.spec.num_read_heads * int(params.memory.shape[-1])


def output_size(params: NTMParams) -> int:
    """H + R·M, the size of ``y = [h, r]``."""
    return int(params.w_heads.shape[0]) + params.spec.num_read_heads * int(params.memory.shape[-1])


def recurrent_blocks(params: NTMParams) -> dict[str, jax.Array]:
    """The LSTM controller's recurrent blocks ``{"controller_i", ..., "controller_o"}`` ({} feed-forward).

    The memory's recurrence has no fixed matrix; ``gradient_flow.carry_jacobians`` sees all of it.
    """
    if not isinstance(params.controller, lstm.LSTMParams):
        return {}
    return {f"controller_{name}": block for name, block in zip("ifgo", split_gates(params.controller.w_h, 4))}


def _check(params: NTMParams, carry: Any, x: Any) -> None:
    check_params_type(params, NTMParams, "ntm.step")
    check_array(x, "x")
    size = input_size(params)
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"Expected x with last dimension {size} (the cell's input_size), got shape {tuple(x.shape)}.")
    if not isinstance(carry, NTMCarry):
        raise ValueError(f"ntm.step expects an NTMCarry carry, got {type(carry).__name__}.")
    batch = tuple(x.shape[:-1])
    n, m = params.memory.shape
    spec = params.spec
    expected = {
        "memory": (batch + (n, m), "x's batch shape + (N, M) = (memory_size, memory_width)"),
        "reads": (batch + (spec.num_read_heads, m), "x's batch shape + (R, M)"),
        "weightings": (batch + (spec.num_read_heads + spec.num_write_heads, n), "x's batch shape + (R + W, N)"),
    }
    for name, (shape, why) in expected.items():
        value = getattr(carry, name)
        check_array(value, f"carry.{name}")
        if tuple(value.shape) != shape:
            raise ValueError(f"Expected carry.{name} with shape {shape} ({why}), got shape {tuple(value.shape)}.")
    if spec.controller == "feedforward" and carry.controller is not None:
        raise ValueError("Expected carry.controller None (a feed-forward controller has no state).")


def _norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(v * v, axis=-1) + COSINE_EPS**2)


def address(
    key_vector: jax.Array, beta: jax.Array, gate: jax.Array, shift: jax.Array, gamma: jax.Array,
    memory: jax.Array, previous: jax.Array,
) -> jax.Array:
    """The weighting of K heads at once, equations (5)–(9).

    Args:
      key_vector: ``(*batch, K, M)``, the keys k; beta, gate, gamma: ``(*batch, K, 1)`` (β > 0, g ∈ [0, 1], γ ≥ 1);
      shift: ``(*batch, K, S)``, a distribution over shifts ``−S₀ … S₀``;
      memory: ``(*batch, N, M)``; previous: ``(*batch, K, N)``, each head's last weighting.

    Returns:
      ``(*batch, K, N)`` weightings, each summing to 1.
    """
    dots = jnp.einsum("...km,...nm->...kn", key_vector, memory)
    similarity = dots / (_norm(key_vector)[..., :, None] * _norm(memory)[..., None, :])  # (6)
    content = jax.nn.softmax(beta * similarity, axis=-1)  # (5)
    gated = gate * content + (1 - gate) * previous  # (7)
    s0 = (shift.shape[-1] - 1) // 2
    shifted = sum(shift[..., s0 + d, None] * jnp.roll(gated, d, axis=-1) for d in range(-s0, s0 + 1))  # (8)
    return jax.nn.softmax(gamma * jnp.log(shifted + SHARPEN_EPS), axis=-1)  # (9)


def step(params: NTMParams, carry: NTMCarry, x: jax.Array) -> tuple[NTMCarry, jax.Array]:
    """One NTM step for ``x`` of shape ``(*batch, input_size)``; returns ``(carry', [h, r])``."""
    _check(params, carry, x)
    spec = params.spec
    batch = tuple(x.shape[:-1])
    m = params.memory.shape[-1]
    num_read, num_write = spec.num_read_heads, spec.num_write_heads
    heads = num_read + num_write
    per_head, per_write = head_sizes(params)

    u = jnp.concatenate([x, carry.reads.reshape(batch + (num_read * m,))], axis=-1)
    if spec.controller == "lstm":
        controller, h = lstm.step(params.controller, carry.controller, u)
    else:
        z = u @ params.controller.w
        controller, h = None, jnp.tanh(z + lift(params.controller.b, z))
    z = h @ params.w_heads
    z = z + lift(params.b_heads, z)
    addressing = z[..., : heads * per_head].reshape(batch + (heads, per_head))
    writing = z[..., heads * per_head :].reshape(batch + (num_write, per_write))

    weightings = address(
        jnp.tanh(addressing[..., :m]),
        jax.nn.softplus(addressing[..., m : m + 1]),
        jax.nn.sigmoid(addressing[..., m + 1 : m + 2]),
        jax.nn.softmax(addressing[..., m + 3 :], axis=-1),
        1 + jax.nn.softplus(addressing[..., m + 2 : m + 3]),
        carry.memory,
        carry.weightings,
    )
    read_w, write_w = weightings[..., :num_read, :], weightings[..., num_read:, :]
    reads = jnp.einsum("...rn,...nm->...rm", read_w, carry.memory)  # (2)
    erase, add = jax.nn.sigmoid(writing[..., :m]), jnp.tanh(writing[..., m:])
    keep = jnp.prod(1 - write_w[..., :, :, None] * erase[..., :, None, :], axis=-3)  # (3)
    memory = carry.memory * keep + jnp.einsum("...wn,...wm->...nm", write_w, add)  # (4)
    y = jnp.concatenate([h, reads.reshape(batch + (num_read * m,))], axis=-1)
    return NTMCarry(controller, memory, reads, weightings), y
