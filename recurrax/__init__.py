"""recurrax: recurrent neural networks in JAX.

Layers, bottom up (the folders follow them): cell families in ``recurrax.cells`` (``elman``,
``lstm``, ``gru``, ``reservoir``, ``mingru``, ``minlstm``, ``indrnn``, ``lru``, ``ntm``, and the
modern ``slstm``, ``mlstm``, ``rglru``, ``selective_ssm``, ``cfc``, ``ltc``: pure ``init`` /
``initial_carry`` / ``step`` over NamedTuples; any user-written family is accepted everywhere)
and the blocks around the modern ones in ``recurrax.blocks`` (``hawk``, ``mamba``); ``unroll``
(the time loop of every layer) with ``recurrax.parallel``
(parallel-in-time evaluation: associative scans, DEER, quasi-DEER, ELK) and
``recurrax.kernels`` (oneDNN's fused RNN primitives) beside it; layers and topologies;
``recurrax.training`` (losses, optax steps, ``fit``, checkpoints, truncated BPTT, data-parallel
meshes, ``hessian_free``); ``recurrax.analysis`` (``gradient_flow``, ``truncation``,
hand-derived BPTT, ``tasks``); ``recurrax.seq2seq`` (``vocab``, ``attention``, ``decoding``,
the encoder–decoder model, ``char_lm``); ``recurrax.reservoirs`` (``esn``, ``timeseries``);
weight converters in ``recurrax.interop`` and Flax NNX shells in ``recurrax.nnx``. The modules
of the subpackages keep their short paths: ``recurrax.esn``, ``recurrax.gradient_flow``,
``recurrax.hessian_free``, ``recurrax.tasks``, ... name the same module objects.

>>> import jax, jax.numpy as jnp
>>> import recurrax
>>> params = recurrax.init_stack(jax.random.key(0), input_size=3, hidden_sizes=[16, 16])
>>> carries, ys = recurrax.stack(params, jnp.ones((4, 10, 3)), lengths=jnp.array([10, 7, 3, 1]))
>>> ys.shape
(4, 10, 16)
"""

import sys as _sys

from recurrax import initializers as initializers
from recurrax._activations import Activation as Activation
from recurrax.analysis import elman_bptt as elman_bptt
from recurrax._checks import check_lengths as check_lengths
from recurrax.training import data_mesh as data_mesh
from recurrax.training import replicate as replicate
from recurrax.training import shard_batch as shard_batch
from recurrax.analysis import elman_readout_bptt as elman_readout_bptt
from recurrax.analysis import lstm_bptt as lstm_bptt
from recurrax._layers import BidirectionalParams as BidirectionalParams
from recurrax._layers import DenseParams as DenseParams
from recurrax._layers import EmbeddingParams as EmbeddingParams
from recurrax._layers import Merge as Merge
from recurrax._layers import RNNParams as RNNParams
from recurrax._layers import StackParams as StackParams
from recurrax._layers import bidirectional as bidirectional
from recurrax._layers import dense as dense
from recurrax._layers import dropout as dropout
from recurrax._layers import embed as embed
from recurrax._layers import forward_mode as forward_mode
from recurrax._layers import init_bidirectional as init_bidirectional
from recurrax._layers import init_dense as init_dense
from recurrax._layers import init_embedding as init_embedding
from recurrax._layers import init_rnn as init_rnn
from recurrax._layers import init_stack as init_stack
from recurrax._layers import layer_input_size as layer_input_size
from recurrax._layers import layer_output_size as layer_output_size
from recurrax._layers import one_hot as one_hot
from recurrax._layers import rnn as rnn
from recurrax._layers import rnn_initial_carry as rnn_initial_carry
from recurrax._layers import stack as stack
from recurrax._layers import stack_initial_carries as stack_initial_carries
from recurrax._layers import stack_step as stack_step
from recurrax.training import sequence_cross_entropy as sequence_cross_entropy
from recurrax.training import sequence_mse as sequence_mse
from recurrax.training import sequence_nll as sequence_nll
from recurrax.training import CheckpointError as CheckpointError
from recurrax.training import checkpoint_steps as checkpoint_steps
from recurrax.training import restore_checkpoint as restore_checkpoint
from recurrax.training import save_checkpoint as save_checkpoint
from recurrax.training import make_tbptt_train_step as make_tbptt_train_step
from recurrax.training import truncated_gradient as truncated_gradient
from recurrax._topologies import Encoded as Encoded
from recurrax._topologies import Generated as Generated
from recurrax._topologies import encode as encode
from recurrax._topologies import generate as generate
from recurrax._topologies import last_outputs as last_outputs
from recurrax._topologies import many_to_many as many_to_many
from recurrax._topologies import many_to_one as many_to_one
from recurrax._topologies import teaching_mask as teaching_mask
from recurrax.training import FitResult as FitResult
from recurrax.training import TrainState as TrainState
from recurrax.training import apply_gradients as apply_gradients
from recurrax.training import default_optimizer as default_optimizer
from recurrax.training import fit as fit
from recurrax.training import init_train_state as init_train_state
from recurrax.training import make_train_step as make_train_step
from recurrax.training import sgd_momentum as sgd_momentum
from recurrax._unroll import sequence_mask as sequence_mask
from recurrax._unroll import unroll as unroll
from recurrax._unroll import unroll_cell as unroll_cell
from recurrax.cells import elman as elman
from recurrax.cells import CellFamily as CellFamily
from recurrax.cells import as_family as as_family
from recurrax.cells import register_cell as register_cell
from recurrax.cells import registered_cells as registered_cells
from recurrax.cells import unregister_cell as unregister_cell
from recurrax.cells import gru as gru
from recurrax.cells import lstm as lstm
from recurrax.cells import ntm as ntm
from recurrax.cells import reservoir as reservoir
from recurrax.cells.elman import ElmanCarry as ElmanCarry
from recurrax.cells.elman import ElmanParams as ElmanParams
from recurrax.cells.gru import GRUCarry as GRUCarry
from recurrax.cells.gru import GRUParams as GRUParams
from recurrax.cells.lstm import LSTMCarry as LSTMCarry
from recurrax.cells.lstm import LSTMParams as LSTMParams
from recurrax.cells.ntm import NTMCarry as NTMCarry
from recurrax.cells.ntm import NTMParams as NTMParams
from recurrax.cells.reservoir import ReservoirCarry as ReservoirCarry
from recurrax.cells.reservoir import ReservoirParams as ReservoirParams
from recurrax.cells import indrnn as indrnn
from recurrax.cells import lru as lru
from recurrax.cells import cfc as cfc
from recurrax.cells import ltc as ltc
from recurrax.cells import mlstm as mlstm
from recurrax.cells import rglru as rglru
from recurrax.cells import selective_ssm as selective_ssm
from recurrax.cells import slstm as slstm
from recurrax.cells import mingru as mingru
from recurrax.cells import minlstm as minlstm
from recurrax.cells.indrnn import IndRNNCarry as IndRNNCarry
from recurrax.cells.indrnn import IndRNNParams as IndRNNParams
from recurrax.cells.lru import LRUCarry as LRUCarry
from recurrax.cells.lru import LRUParams as LRUParams
from recurrax.cells.mingru import MinGRUCarry as MinGRUCarry
from recurrax.cells.mingru import MinGRUParams as MinGRUParams
from recurrax.cells.minlstm import MinLSTMCarry as MinLSTMCarry
from recurrax.cells.minlstm import MinLSTMParams as MinLSTMParams

__version__ = "0.1.0"

# Modules used by name (``recurrax.tasks.adding_problem``), importable as attributes.
from recurrax import analysis as analysis  # noqa: E402
from recurrax import blocks as blocks  # noqa: E402
from recurrax import cells as cells  # noqa: E402
from recurrax import interop as interop  # noqa: E402
from recurrax import kernels as kernels  # noqa: E402
from recurrax import nnx as nnx  # noqa: E402
from recurrax import parallel as parallel  # noqa: E402
from recurrax import reservoirs as reservoirs  # noqa: E402
from recurrax import seq2seq as seq2seq  # noqa: E402
from recurrax import training as training  # noqa: E402
from recurrax.blocks import hawk as hawk  # noqa: E402
from recurrax.blocks import mamba as mamba  # noqa: E402
from recurrax.analysis import gradient_flow as gradient_flow  # noqa: E402
from recurrax.analysis import tasks as tasks  # noqa: E402
from recurrax.analysis import truncation as truncation  # noqa: E402
from recurrax.reservoirs import esn as esn  # noqa: E402
from recurrax.reservoirs import timeseries as timeseries  # noqa: E402
from recurrax.seq2seq import attention as attention  # noqa: E402
from recurrax.seq2seq import char_lm as char_lm  # noqa: E402
from recurrax.seq2seq import decoding as decoding  # noqa: E402
from recurrax.seq2seq import vocab as vocab  # noqa: E402
from recurrax.training import hessian_free as hessian_free  # noqa: E402

# The short public paths of modules that live in subpackages: ``import recurrax.lstm`` and
# ``from recurrax.esn import fit`` work as ``from recurrax import lstm`` does (the docs use both),
# and name the same module object as the long path (``recurrax.reservoirs.esn``).
for _name in ("elman", "lstm", "gru", "reservoir", "mingru", "minlstm", "indrnn", "lru", "ntm",
              "slstm", "mlstm", "rglru", "selective_ssm", "cfc", "ltc", "hawk", "mamba",
              "gradient_flow", "tasks", "truncation", "esn", "timeseries", "attention", "char_lm",
              "decoding", "vocab", "hessian_free"):
    _sys.modules[f"{__name__}.{_name}"] = globals()[_name]
del _name

__all__ = [
    "Activation", "BidirectionalParams", "DenseParams", "ElmanCarry", "ElmanParams",
    "EmbeddingParams", "Encoded", "GRUCarry", "GRUParams", "Generated", "LSTMCarry",
    "LSTMParams", "Merge", "RNNParams", "StackParams", "bidirectional", "dense", "dropout",
    "elman", "embed", "encode", "forward_mode", "generate", "gru", "init_bidirectional",
    "init_dense", "init_embedding", "init_rnn", "init_stack", "initializers",
    "layer_input_size", "layer_output_size", "lstm", "many_to_many", "many_to_one", "one_hot",
    "rnn", "rnn_initial_carry", "sequence_mask", "stack", "stack_initial_carries", "stack_step", "teaching_mask",
    "unroll", "unroll_cell",
    "FitResult", "TrainState", "apply_gradients", "default_optimizer", "fit", "init_train_state", "make_train_step",
    "sequence_cross_entropy", "sequence_mse", "sequence_nll", "sgd_momentum",
    "make_tbptt_train_step", "truncated_gradient",
    "CheckpointError", "checkpoint_steps", "restore_checkpoint", "save_checkpoint",
    "elman_bptt", "elman_readout_bptt", "lstm_bptt",
    "attention", "char_lm", "decoding", "gradient_flow", "seq2seq", "tasks", "truncation", "vocab",
    "reservoir", "ReservoirCarry", "ReservoirParams", "esn", "timeseries",
    "ntm", "NTMCarry", "NTMParams",
    "CellFamily", "as_family", "register_cell", "registered_cells", "unregister_cell", "cells",
    "check_lengths", "last_outputs", "data_mesh", "replicate", "shard_batch", "nnx", "interop",
    "mingru", "MinGRUCarry", "MinGRUParams", "minlstm", "MinLSTMCarry", "MinLSTMParams",
    "indrnn", "IndRNNCarry", "IndRNNParams", "lru", "LRUCarry", "LRUParams",
    "hessian_free", "kernels", "parallel", "analysis", "reservoirs", "training",
    "slstm", "mlstm", "rglru", "selective_ssm", "cfc", "ltc", "blocks", "hawk", "mamba",
]
