"""Initialisers for recurrent weights.

Conventions (docs/architecture.md): kernels are stored ``(in_features, out_features)`` and applied
as ``x @ W``. Fused gate matrices hold ``num_blocks`` blocks of ``hidden_size`` columns side by side,
and every initialiser here works *per gate block*: a fused recurrent kernel
``(H, num_blocks * H)`` gets an independent orthogonal ``(H, H)`` matrix per gate, so each gate's
recurrence is orthogonal, which orthogonalising the fused ``(H, 4H)`` matrix as a whole (as Flax
NNX and Keras do) does not give.

Every function taking ``key`` follows jax's initialiser protocol ``init(key, shape, dtype)`` or
says otherwise. Names accepted where an initialiser is expected: ``"lecun_normal"``,
``"glorot_uniform"``, ``"orthogonal"``, ``"identity"``, ``"zeros"``, or any such callable.
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[[jax.Array, tuple, jnp.dtype], jax.Array]


def identity(key: jax.Array, shape: tuple, dtype=jnp.float32) -> jax.Array:
    """The identity matrix, for IRNNs (Le, Jaitly & Hinton 2015). ``key`` is unused.

    >>> identity(jax.random.key(0), (2, 2)).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    del key
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"Expected a square shape (n, n) for the identity initialiser, got {shape}.")
    return jnp.eye(shape[0], dtype=dtype)


def _orthogonal(key: jax.Array, shape: tuple, dtype=jnp.float32) -> jax.Array:
    """jax's orthogonal initialiser; below 32 bits drawn in float32 and cast (CPU LAPACK has no
    bfloat16/float16 QR, so ``init(..., dtype=jnp.bfloat16)`` would fail otherwise)."""
    compute = dtype if jnp.finfo(dtype).bits >= 32 else jnp.float32
    return jax.nn.initializers.orthogonal()(key, shape, compute).astype(dtype)


_NAMED: dict[str, Initializer] = {
    "lecun_normal": jax.nn.initializers.lecun_normal(),
    "glorot_uniform": jax.nn.initializers.glorot_uniform(),
    "orthogonal": _orthogonal,
    "identity": identity,
    "zeros": jax.nn.initializers.zeros,
}


def get(init: Union[str, Initializer]) -> Initializer:
    """Resolve an initialiser given by name or as a callable.

    >>> get("orthogonal") is get("orthogonal")
    True
    """
    if callable(init):
        return init
    if init not in _NAMED:
        raise ValueError(f"Expected an initialiser callable or one of {sorted(_NAMED)}, got {init!r}.")
    return _NAMED[init]


def per_block(
    init: Union[str, Initializer],
    key: jax.Array,
    in_features: int,
    hidden_size: int,
    num_blocks: int,
    dtype=jnp.float32,
) -> jax.Array:
    """Fused kernel ``(in_features, num_blocks * hidden_size)``, each block drawn separately.

    Fan-in/fan-out based initialisers (Glorot) thus see one gate's ``(in, H)`` block, as if the
    gates were separate layers. One PRNG key per block.

    >>> w = per_block("orthogonal", jax.random.key(0), 3, 3, num_blocks=4)
    >>> w.shape
    (3, 12)
    """
    init = get(init)
    keys = jax.random.split(key, num_blocks)
    blocks = [init(k, (in_features, hidden_size), dtype) for k in keys]
    return jnp.concatenate(blocks, axis=1)


def block_orthogonal(key: jax.Array, hidden_size: int, num_blocks: int, dtype=jnp.float32) -> jax.Array:
    """Recurrent kernel ``(H, num_blocks * H)`` whose every ``(H, H)`` gate block is orthogonal.

    >>> w = block_orthogonal(jax.random.key(0), 4, num_blocks=3)
    >>> bool(jnp.allclose(w[:, 4:8].T @ w[:, 4:8], jnp.eye(4), atol=1e-5))
    True
    """
    return per_block("orthogonal", key, hidden_size, hidden_size, num_blocks, dtype)


def spectral_radius(w: jax.Array) -> jax.Array:
    """Largest eigenvalue modulus ``max |eig(w)|`` of a square matrix.

    Computed with ``jnp.linalg.eigvals`` (non-symmetric eigendecomposition; on backends without
    it, call this on the host).

    >>> float(spectral_radius(2.0 * jnp.eye(3)))
    2.0
    """
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"Expected a square matrix (n, n), got shape {tuple(w.shape)}.")
    return jnp.max(jnp.abs(jnp.linalg.eigvals(w.astype(jnp.float32 if w.dtype != jnp.float64 else w.dtype))))


def scale_to_spectral_radius(w: jax.Array, radius: float) -> jax.Array:
    """Rescale a square matrix so that its spectral radius is exactly ``radius``: ``w · ρ / ρ(w)``.

    The eigenvalues are computed in float64 on the host when ``w`` is concrete (exact to
    round-off), and with ``jnp.linalg.eigvals`` when traced.

    >>> w = jnp.array([[0.0, 2.0], [0.5, 0.0]])
    >>> round(float(spectral_radius(scale_to_spectral_radius(w, 0.9))), 6)
    0.9
    """
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"Expected a spectral radius >= 0, got {radius!r}.")
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"Expected a square matrix (n, n), got shape {tuple(w.shape)}.")
    if isinstance(w, jax.core.Tracer):
        current = spectral_radius(w)
    else:
        current = np.max(np.abs(np.linalg.eigvals(np.asarray(w, dtype=np.float64))))
        if current == 0:
            raise ValueError("Cannot rescale a matrix whose spectral radius is 0 (nilpotent or zero).")
    return (w * (radius / current)).astype(w.dtype)
