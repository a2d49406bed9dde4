"""oneDNN's fused RNN primitives as XLA FFI calls, with their backward through ``jax.custom_vjp``.

One call runs a whole layer: every time step of one direction (or both, concatenated) of a
vanilla RNN (tanh, relu, sigmoid), LSTM, GRU or LBR-GRU, in float32, on the CPU. The native part
(``_onednn_ext``, built from ``_onednn_ext.cc`` at install time where a C++ compiler is present)
only moves buffers; shapes, the choice of path and the cell conventions live in Python.

Buffers, with ``Dn`` directions (1, or 2 for both at once) and oneDNN's gate order:

    x       (T, N, C), or (N, T, C) with batch_first
    h0, c0  (Dn, N, H)                   c0 is read by the LSTM only
    w_x     (Dn, C, G, H)   w_h (Dn, H, G, H)   bias (Dn, Gb, H)
    y       like x, with Dn·H features; hT, cT (Dn, N, H)

Without a compiled extension, or without oneDNN's library (the ``onednn-cpu-gomp`` wheel),
``available()`` is False and ``unavailable_reason()`` says why; nothing else here may be called.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import importlib
import importlib.metadata
import os
from typing import Optional

import jax
import jax.numpy as jnp

__all__ = ["Cell", "available", "unavailable_reason", "onednn_version", "layer"]

_FORWARD = "recurrax_onednn_rnn_forward"
_BACKWARD = "recurrax_onednn_rnn_backward"


class Cell(enum.IntEnum):
    """oneDNN cell kinds, as the native code numbers them."""

    TANH = 0
    RELU = 1
    SIGMOID = 2
    LSTM = 3
    LBR_GRU = 4  # "linear before reset": recurrax's reset-after GRU with b_hn
    GRU = 5  # oneDNN's GRU: recurrax's reset-before GRU with the update gate negated

    @property
    def has_cell_state(self) -> bool:
        return self is Cell.LSTM


def _find_libdnnl() -> Optional[str]:
    """Path of ``libdnnl.so.3`` from the ``onednn-cpu-gomp`` wheel (a data wheel: ``<prefix>/lib``)."""
    try:
        dist = importlib.metadata.distribution("onednn-cpu-gomp")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == "libdnnl.so.3":
            path = os.fspath(dist.locate_file(file))
            if os.path.exists(path):
                return path
    return None


@functools.cache
def _extension():
    """Load oneDNN and the extension and register the FFI targets; ``(module, None)`` or ``(None, why)``."""
    if os.environ.get("RECURRAX_DISABLE_NATIVE", "") not in ("", "0"):
        return None, "RECURRAX_DISABLE_NATIVE is set"
    library = _find_libdnnl()
    if library is None:
        return None, "oneDNN's library is not installed (pip install onednn-cpu-gomp)"
    try:
        # The extension links against libdnnl.so.3 by its soname; loading it first, globally,
        # lets the dynamic loader resolve that from the wheel's folder, which is on no search path.
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    except OSError as error:
        return None, f"oneDNN's library failed to load: {error}"
    try:
        module = importlib.import_module("recurrax.kernels._onednn_ext")
    except ImportError as error:
        return None, (f"the native extension is not built ({error}); reinstall recurrax where a C++ "
                      "compiler is present (pip install -e . in the repository builds it)")
    for name, capsule in module.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return module, None


def available() -> bool:
    """Whether the oneDNN kernel is built and loads here."""
    return _extension()[0] is not None


def unavailable_reason() -> Optional[str]:
    """Why the oneDNN kernel cannot run here, or ``None`` when it can."""
    return _extension()[1]


def onednn_version() -> Optional[tuple[int, int, int]]:
    """The loaded oneDNN's ``(major, minor, patch)``, or ``None``."""
    module = _extension()[0]
    return None if module is None else tuple(module.onednn_version())


@functools.cache
def _workspace_bytes(cell: Cell, steps: int, batch: int, input_size: int, hidden_size: int,
                     directions: int, reverse: bool, batch_first: bool) -> int:
    return _extension()[0].workspace_bytes(int(cell), steps, batch, input_size, hidden_size, directions,
                                           reverse, batch_first)


def _attributes(cell, x, w_h, directions, reverse, batch_first) -> dict:
    steps, batch = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    return dict(cell=int(cell), steps=steps, batch=batch, input_size=x.shape[2], hidden_size=w_h.shape[-1],
                directions=directions, reverse=reverse, batch_first=batch_first)


def _forward(cell, x, h0, c0, w_x, w_h, bias, *, directions, reverse, batch_first, training):
    attrs = _attributes(cell, x, w_h, directions, reverse, batch_first)
    y_shape = x.shape[:2] + (directions * attrs["hidden_size"],)
    workspace = _workspace_bytes(Cell(cell), *(attrs[k] for k in ("steps", "batch", "input_size", "hidden_size",
                                                                  "directions", "reverse", "batch_first")))
    results = (
        jax.ShapeDtypeStruct(y_shape, jnp.float32),
        jax.ShapeDtypeStruct(h0.shape, jnp.float32),
        jax.ShapeDtypeStruct(h0.shape, jnp.float32),
        jax.ShapeDtypeStruct((workspace if training else 1,), jnp.uint8),
    )
    call = jax.ffi.ffi_call(_FORWARD, results, vmap_method="sequential")
    return call(x, h0, c0, w_x, w_h, bias, training=training, **attrs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 7, 8, 9))
def _layer(cell, x, h0, c0, w_x, w_h, bias, directions, reverse, batch_first):
    y, h_t, c_t, _ = _forward(cell, x, h0, c0, w_x, w_h, bias, directions=directions, reverse=reverse,
                              batch_first=batch_first, training=False)
    return y, h_t, c_t


def _layer_fwd(cell, x, h0, c0, w_x, w_h, bias, directions, reverse, batch_first):
    y, h_t, c_t, workspace = _forward(cell, x, h0, c0, w_x, w_h, bias, directions=directions, reverse=reverse,
                                      batch_first=batch_first, training=True)
    return (y, h_t, c_t), (x, h0, c0, w_x, w_h, bias, y, h_t, c_t, workspace)


def _layer_bwd(cell, directions, reverse, batch_first, residuals, cotangents):
    x, h0, c0, w_x, w_h, bias, y, h_t, c_t, workspace = residuals
    dy, dh_t, dc_t = cotangents
    results = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (x, h0, c0, w_x, w_h, bias))
    call = jax.ffi.ffi_call(_BACKWARD, results, vmap_method="sequential")
    attrs = _attributes(cell, x, w_h, directions, reverse, batch_first)
    return call(x, h0, c0, w_x, w_h, bias, y, h_t, c_t, workspace, dy, dh_t, dc_t, **attrs)


_layer.defvjp(_layer_fwd, _layer_bwd)


def layer(cell: Cell, x, h0, c0, w_x, w_h, bias, *, directions: int = 1, reverse: bool = False,
          batch_first: bool = False):
    """Run one layer through oneDNN: ``(y, h_T, c_T)`` in the buffer layouts of the module docstring.

    Differentiable in reverse mode (oneDNN's backward primitive, from the forward_training
    workspace); forward-mode autodiff raises JAX's custom_vjp ``TypeError``. Every array float32.
    """
    if not available():
        raise RuntimeError(f"recurrax's oneDNN kernel is unavailable: {unavailable_reason()}.")
    return _layer(Cell(cell), x, h0, c0, w_x, w_h, bias, directions, reverse, batch_first)

