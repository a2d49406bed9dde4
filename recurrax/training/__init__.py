"""Training: losses, optax steps, ``fit``, checkpoints, truncated BPTT, meshes, Hessian-free.

The fourth layer of the library (docs/architecture.md): everything here takes a model as a loss
function of its params, and knows cells and layers only through them.

- ``_losses``: masked per-step losses (``sequence_cross_entropy``, ``sequence_mse``,
  ``sequence_nll``);
- ``_train``: ``TrainState``, ``make_train_step`` (``clip_by_global_norm`` + Adam by default),
  ``fit`` (evaluation, early stopping, time budgets, checkpointed resumption);
- ``_checkpoint``: orbax checkpoints that are written atomically and verified on restore;
- ``_tbptt``: truncated BPTT, TBPTT(k1, k2), over streams;
- ``_sharding``: data-parallel meshes (``data_mesh``, ``shard_batch``, ``replicate``);
- ``hessian_free``: Martens–Sutskever optimisation with structural damping.

The public names are re-exported at the top level (``recurrax.fit``, ``recurrax.hessian_free``).
"""

from recurrax.training import hessian_free as hessian_free
from recurrax.training._checkpoint import CheckpointError as CheckpointError
from recurrax.training._checkpoint import checkpoint_steps as checkpoint_steps
from recurrax.training._checkpoint import restore_checkpoint as restore_checkpoint
from recurrax.training._checkpoint import save_checkpoint as save_checkpoint
from recurrax.training._losses import sequence_cross_entropy as sequence_cross_entropy
from recurrax.training._losses import sequence_mse as sequence_mse
from recurrax.training._losses import sequence_nll as sequence_nll
from recurrax.training._sharding import data_mesh as data_mesh
from recurrax.training._sharding import replicate as replicate
from recurrax.training._sharding import shard_batch as shard_batch
from recurrax.training._tbptt import make_tbptt_train_step as make_tbptt_train_step
from recurrax.training._tbptt import truncated_gradient as truncated_gradient
from recurrax.training._train import FitResult as FitResult
from recurrax.training._train import TrainState as TrainState
from recurrax.training._train import apply_gradients as apply_gradients
from recurrax.training._train import default_optimizer as default_optimizer
from recurrax.training._train import fit as fit
from recurrax.training._train import init_train_state as init_train_state
from recurrax.training._train import make_train_step as make_train_step
from recurrax.training._train import sgd_momentum as sgd_momentum

__all__ = [
    "CheckpointError", "FitResult", "TrainState", "apply_gradients", "checkpoint_steps",
    "data_mesh", "default_optimizer", "fit", "hessian_free", "init_train_state",
    "make_tbptt_train_step", "make_train_step", "replicate", "restore_checkpoint",
    "save_checkpoint", "sequence_cross_entropy", "sequence_mse", "sequence_nll", "sgd_momentum",
    "shard_batch", "truncated_gradient",
]
