"""Checkpoints of a whole ``TrainState`` (params, optimiser state, step, PRNG key) with orbax.

One checkpoint per step in ``directory/<step>/``, written by ``orbax.checkpoint``'s
``CheckpointManager`` (atomically: a step appears only once fully written). Next to the
arrays each checkpoint stores a manifest: every leaf's path, shape and dtype and a SHA-256
digest of all array bytes. Restoring checks the manifest against the template state (a clear
error names the first leaf that differs) and the digest against the restored bytes, so a
corrupt, truncated or mismatched checkpoint raises ``CheckpointError``; nothing ever falls
back to a fresh state. Saving never overwrites an existing step, and old steps are only
deleted when ``max_to_keep`` asks for it.

Typed PRNG keys (``jax.random.key``) are stored as their key data and re-wrapped with the
template's key implementation, so a resumed run draws the same random numbers.

A failed restore leaves nothing on stderr but the ``CheckpointError``: the first restore
installs filters on ``sys.unraisablehook`` and on the ``asyncio`` logger that drop only the
leftovers of orbax's failed reads (see ``_quiet_orbax_after_failure``).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import pathlib
import sys
import traceback
from typing import Any, Optional, Union

import jax
import numpy as np

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the state it is restored into."""


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _plain(state: Any) -> Any:
    """The state with typed PRNG keys replaced by their uint32 key data."""
    return jax.tree.map(lambda leaf: jax.random.key_data(leaf) if _is_key(leaf) else leaf, state)


def _manifest(plain_state: Any) -> dict:
    """Leaf paths, shapes and dtypes, and a SHA-256 digest of all the leaves' bytes in order."""
    digest = hashlib.sha256()
    leaves = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(plain_state)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(array.tobytes())
        leaves.append(
            {"path": jax.tree_util.keystr(path), "shape": list(array.shape), "dtype": str(array.dtype)}
        )
    return {"leaves": leaves, "sha256": digest.hexdigest()}


def _manager(directory: PathLike, max_to_keep: Optional[int] = None, create: bool = False):
    import orbax.checkpoint as ocp  # imported here: orbax is heavy and only needed for checkpoints

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def _from_orbax(error: BaseException) -> bool:
    """True for an error raised by orbax's or tensorstore's reads."""
    files = [frame.filename for frame in traceback.extract_tb(error.__traceback__)]
    return "tensorstore_spec=" in str(error) or any(
        f"{os.sep}{package}{os.sep}" in name for name in files for package in ("orbax", "tensorstore")
    )


def _is_orbax_leftover(unraisable: Any) -> bool:
    """True for the unraisable exceptions a failed orbax restore leaves behind, and only those."""
    error, obj = unraisable.exc_value, unraisable.object
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return "call_soon_threadsafe" in [frame.name for frame in traceback.extract_tb(unraisable.exc_traceback)]
    return inspect.iscoroutine(obj) and f"{os.sep}orbax{os.sep}" in obj.cr_code.co_filename


class _DropOrbaxLeftovers(logging.Filter):
    """Drops asyncio's "exception was never retrieved" records for orbax's abandoned reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        abandoned = str(record.msg).startswith(("Future exception was never retrieved",
                                                "Task exception was never retrieved"))
        return not (abandoned and error is not None and _from_orbax(error))


def _quiet_orbax_after_failure() -> None:
    """Drop the tracebacks orbax prints on stderr after a failed restore (installed once).

    When one array read fails, orbax's restore raises at once and closes its event loop while
    tensorstore is still finishing the other reads. Each late read then tries to wake the closed
    loop from a tensorstore thread, and Python prints that ``RuntimeError`` (and any read
    coroutine that died unawaited) as an unraisable exception; asyncio logs the abandoned
    futures' errors when they are collected. All of it comes up to many milliseconds after
    ``restore_checkpoint`` has raised. Nobody waits for those reads, orbax gives no handle to
    drain them, and the ``CheckpointError`` already says what failed, so their tracebacks are
    noise. Every other unraisable exception goes to the hook that was installed before, and
    every other asyncio record is logged as before.
    """
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _DropOrbaxLeftovers) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_DropOrbaxLeftovers())
    previous = sys.unraisablehook
    if getattr(previous, "_drops_orbax_leftovers", False):
        return

    def hook(unraisable):
        if not _is_orbax_leftover(unraisable):
            previous(unraisable)

    hook._drops_orbax_leftovers = True
    sys.unraisablehook = hook


def checkpoint_steps(directory: PathLike) -> list[int]:
    """The steps with a complete checkpoint in ``directory`` (sorted; empty if none)."""
    if not pathlib.Path(directory).is_dir():
        return []
    return sorted(_manager(directory).all_steps())


def save_checkpoint(directory: PathLike, state: Any, *, max_to_keep: Optional[int] = None) -> pathlib.Path:
    """Write ``state`` (a ``TrainState``) as ``directory/<state.step>/`` and wait until it is on disk.

    Args:
      max_to_keep: keep only the newest this many checkpoints (default: keep all).

    Raises ``CheckpointError`` if that step already has a checkpoint (never overwritten).
    """
    import orbax.checkpoint as ocp

    if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep <= 0):
        raise ValueError(f"Expected max_to_keep to be a positive integer or None, got {max_to_keep!r}.")
    step = int(state.step)
    plain = _plain(state)
    manager = _manager(directory, max_to_keep, create=True)
    if step in manager.all_steps():
        raise CheckpointError(
            f"A checkpoint for step {step} already exists in {directory}; checkpoints are never "
            "overwritten (restore it, or write to a new directory)."
        )
    items = {"state": ocp.args.StandardSave(plain), "manifest": ocp.args.JsonSave(_manifest(plain))}
    manager.save(step, args=ocp.args.Composite(**items))
    manager.wait_until_finished()
    manager.close()
    return pathlib.Path(directory) / str(step)


def restore_checkpoint(directory: PathLike, like: Any, *, step: Optional[int] = None) -> Any:
    """Read the checkpoint of ``step`` (default: the latest) into the structure of ``like``.

    ``like`` is a state of the same model and optimiser (e.g. a fresh ``init_train_state``);
    only its structure, shapes, dtypes, key implementation and shardings are used. The restored
    arrays take ``like``'s shardings, whatever the devices the checkpoint was written from: a
    state saved on 8 devices restores onto one device, and a one-device checkpoint onto a mesh
    with ``restore_checkpoint(directory, replicate(like, mesh))``.

    Raises ``CheckpointError`` when there is no checkpoint (or not that step), when it does not
    match ``like`` (naming the first differing leaf), or when its bytes fail the digest check.
    """
    import orbax.checkpoint as ocp

    steps = checkpoint_steps(directory)
    if not steps:
        raise CheckpointError(
            f"No checkpoint found in {directory} (expected step directories written by save_checkpoint)."
        )
    step = steps[-1] if step is None else step
    if step not in steps:
        raise CheckpointError(f"No checkpoint for step {step} in {directory}; available steps: {steps}.")
    where = f"Checkpoint {pathlib.Path(directory) / str(step)}"
    plain_like = _plain(like)
    _quiet_orbax_after_failure()  # before any read: the leftovers can arrive before our except runs
    manager = _manager(directory)
    try:
        try:
            manifest = manager.restore(step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore()))
        except Exception as error:  # orbax/tensorstore raise many types; all mean "unreadable"
            raise CheckpointError(f"{where} is corrupt or incomplete: cannot read its manifest ({error}).") from error
        manifest = manifest["manifest"]
        _check_matches(manifest, _manifest(plain_like), where)
        abstract = jax.tree.map(_abstract, plain_like)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        except Exception as error:
            raise CheckpointError(f"{where} is corrupt: its arrays cannot be read ({type(error).__name__}).") from error
    finally:
        manager.close()
    restored = restored["state"]
    if _manifest(restored)["sha256"] != manifest["sha256"]:
        raise CheckpointError(f"{where} is corrupt: its arrays do not match the digest written with them.")

    def rewrap(leaf, template):
        return jax.random.wrap_key_data(leaf, impl=jax.random.key_impl(template)) if _is_key(template) else leaf

    return jax.tree.map(rewrap, restored, like)


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    """The shape, dtype and (for a ``jax.Array``) sharding orbax restores ``leaf`` with."""
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return jax.ShapeDtypeStruct(np.shape(leaf), np.asarray(leaf).dtype)


def _check_matches(saved: dict, expected: dict, where: str) -> None:
    if len(saved["leaves"]) != len(expected["leaves"]):
        raise CheckpointError(
            f"{where} holds {len(saved['leaves'])} arrays, the state to restore into has "
            f"{len(expected['leaves'])}: it was written for a different model or optimiser."
        )
    for got, want in zip(saved["leaves"], expected["leaves"]):
        if got != want:
            raise CheckpointError(
                f"{where} does not match the state to restore into: expected "
                f"{want['path']} {tuple(want['shape'])} {want['dtype']}, the checkpoint has "
                f"{got['path']} {tuple(got['shape'])} {got['dtype']}."
            )
