"""Data parallelism on a ``jax.sharding`` mesh: the batch split over a ``data`` axis.

The training steps (``make_train_step``, ``make_tbptt_train_step``) take ``mesh=``: the step is
one ``jax.jit`` with shardings, the batch (and a TBPTT carry) split by rows over the mesh's
``data`` axis, params and optimiser state replicated on every device. Nothing here writes a
collective: the loss is the same global mean as on one device, so XLA's partitioner inserts the
all-reduce of the gradients itself, and the result equals the one-device step up to float
rounding of the reduction order (tested to 1e-6 on 8 devices).

Random numbers do not depend on the device count: ``jax.random`` draws the same bits for an
array whatever its sharding (threefry is partitionable), so ``dropout``'s mask over a sharded
batch is the single-device mask.

Meshes: the steps work on an ``AxisType.Auto`` view of the mesh they are given (same devices
and axis names), so the compiler propagates shardings through the model's scans and an initial
carry built with ``jnp.zeros((B, H))`` needs no sharding annotation. A mesh with
``AxisType.Explicit`` axes (the default of ``jax.make_mesh``) is accepted and viewed the same
way; arrays placed on it are moved onto the view's shardings (same devices), and the step runs
under ``jax.set_mesh`` of its view, so a caller's own ``jax.set_mesh(explicit_mesh)`` does not
clash with it. Meshes with more axes (``("data", "model")``) work too: the batch is split over
``data`` and everything else is replicated.

Several processes (``jax.distributed.initialize``): every process builds the same mesh over
``jax.devices()`` (all processes' devices), runs the same program and passes the same global
batch; ``shard_batch`` keeps on each process only the rows of its own devices.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(num_devices: Optional[int] = None, axis: str = DATA_AXIS, *,
              devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A one-axis mesh for data parallelism over ``num_devices`` devices (default: all).

    Built with ``jax.make_mesh`` with an ``AxisType.Auto`` axis. ``devices`` picks the devices
    (default ``jax.devices()``, every process's devices in a multi-process run); ``num_devices``
    takes the first that many of them.

    >>> mesh = data_mesh(1)
    >>> mesh.axis_names, mesh.size
    (('data',), 1)
    """
    devices = list(jax.devices() if devices is None else devices)
    if num_devices is None:
        num_devices = len(devices)
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"Expected num_devices between 1 and the {len(devices)} available devices, got {num_devices!r}."
        )
    if not isinstance(axis, str) or not axis:
        raise ValueError(f"Expected axis as a non-empty string, got {axis!r}.")
    return jax.make_mesh((num_devices,), (axis,), axis_types=(AxisType.Auto,), devices=devices[:num_devices])


def check_mesh(mesh: Any, axis: str) -> Mesh:
    """``mesh`` as an ``AxisType.Auto`` mesh over the same devices, after checking it has ``axis``."""
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"Expected mesh to be a jax.sharding.Mesh (e.g. recurrax.data_mesh()), got {type(mesh).__name__}."
        )
    if axis not in mesh.axis_names:
        raise ValueError(
            f"Expected a mesh with a {axis!r} axis to split the batch over, got axes {tuple(mesh.axis_names)}; "
            f"build one with recurrax.data_mesh(axis={axis!r}) or pass the name of the batch axis as axis=."
        )
    if all(kind == AxisType.Auto for kind in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array held whole on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """The sharding of an array split by rows (its leading axis) over ``mesh``'s ``axis``."""
    return NamedSharding(mesh, PartitionSpec(axis))


def _is_key(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _put(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """``leaf`` (array or host value, the same global value on every process) on ``sharding``."""
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
        return leaf
    if _is_key(leaf):
        data = _put(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    if isinstance(leaf, jax.Array) and leaf.is_fully_addressable and sharding.is_fully_addressable:
        return jax.device_put(leaf, sharding)
    # A multi-process mesh: each process places only its own devices' pieces of the global value.
    value = np.asarray(leaf)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` held whole on every device of ``mesh`` (e.g. a ``TrainState``).

    >>> import jax.numpy as jnp
    >>> replicate({"w": jnp.ones(3)}, data_mesh(1))["w"].sharding.spec
    P()
    """
    sharding = replicated(mesh)
    return jax.tree.map(lambda leaf: _put(leaf, sharding), tree)


def check_batch(tree: Any, mesh: Mesh, axis: str = DATA_AXIS, what: str = "batch") -> None:
    """Raise ``ValueError`` unless every leaf of ``tree`` has a leading axis divisible by ``axis``'s size."""
    size = mesh.shape[axis]
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = tuple(np.shape(leaf))
        name = f"{what}{jax.tree_util.keystr(path)}"
        if not shape:
            raise ValueError(
                f"Expected every leaf of the {what} to have the batch as its leading axis, got a scalar at {name}."
            )
        if shape[0] % size:
            raise ValueError(
                f"Expected a global batch size divisible by the {size} devices of mesh axis {axis!r}, "
                f"got {name} of shape {shape} ({shape[0]} rows); use a batch size that is a multiple of {size}."
            )


def shard_batch(tree: Any, mesh: Mesh, axis: str = DATA_AXIS, what: str = "batch") -> Any:
    """Every leaf of ``tree`` split by rows over ``mesh``'s ``axis`` (after ``check_batch``).

    Every leaf has the batch as its leading axis; in a multi-process run each process passes the
    same global value and keeps the rows of its own devices.

    >>> import jax.numpy as jnp
    >>> xs = shard_batch(jnp.ones((4, 3)), data_mesh(1))
    >>> xs.sharding.spec
    P('data',)
    """
    check_batch(tree, mesh, axis, what)
    sharding = batch_sharding(mesh, axis)
    return jax.tree.map(lambda leaf: _put(leaf, sharding), tree)


def jit_data_parallel(step: Callable, mesh: Any, axis: str, jit: bool, *, sharded: tuple, sharded_out: tuple):
    """``step`` jitted on ``mesh``: arguments flagged in ``sharded`` split by rows over ``axis``,
    the others replicated (likewise the outputs, by ``sharded_out``).

    The returned function places its arguments on those shardings first (so host arrays and
    arrays on other devices are accepted) and has ``lower`` (on the placed arguments) and
    ``mesh`` attributes.
    """
    if not jit:
        raise ValueError("mesh= needs jit=True: the shardings are those of one jitted step.")
    mesh = check_mesh(mesh, axis)
    names = ("state", "carry", "batch") if len(sharded) == 3 else ("state", "batch")

    def pick(flags):
        return tuple(batch_sharding(mesh, axis) if flag else replicated(mesh) for flag in flags)

    jitted = jax.jit(step, in_shardings=pick(sharded), out_shardings=pick(sharded_out))

    def place(*args):
        return tuple(
            shard_batch(arg, mesh, axis, what=name) if flag else replicate(arg, mesh)
            for arg, flag, name in zip(args, sharded, names)
        )

    # Under the step's own (Auto) mesh even inside a caller's ``jax.set_mesh(explicit_mesh)``,
    # whose Explicit axes would clash with the Auto shardings of the placed arguments.
    def data_parallel_step(*args):
        with jax.set_mesh(mesh):
            return jitted(*place(*args))

    def lower(*args):
        with jax.set_mesh(mesh):
            return jitted.lower(*place(*args))

    data_parallel_step.lower = lower
    data_parallel_step.mesh = mesh
    data_parallel_step.__doc__ = step.__doc__
    return data_parallel_step
