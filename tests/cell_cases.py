"""The cell configurations every common test runs over: every registered cell family.

``CASES`` is built from ``recurrax.registered_cells()``: each registered name gets the option
variants listed for it in ``VARIANTS``, or one case with its default options, so a newly
registered family enters the common suite without anyone writing it down here
(``test_cells.test_every_registered_cell_has_a_case`` checks it stayed so).

Each case initialises its cell and then overwrites every bias-like tensor (biases, the LSTM's
peephole weights, the GRU's ``b_hn``, IndRNN's recurrent weights, the LRU's ``γ``) with random
values, so a test fails if any of them is ignored, applied to the wrong gate, or applied in the
wrong place.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

import recurrax

INPUT_SIZE = 3  # D; distinct from H so that a transposed kernel cannot go unnoticed
HIDDEN_SIZE = 4  # H


@dataclasses.dataclass(frozen=True)
class CellCase:
    id: str
    family: str  # a registered cell name: "elman", "lstm", "gru", "lru", ...
    kwargs: tuple = ()  # init options as (name, value) pairs

    @property
    def module(self):
        """The object the family was registered from (the cell's module for the built-ins)."""
        return self.cell.source

    @property
    def cell(self) -> recurrax.CellFamily:
        """The family as the layers hold it."""
        return recurrax.cells.resolve_family(self.family)

    @property
    def num_gates(self) -> int:
        return {"elman": 1, "lstm": 4, "gru": 3}[self.family]

    def init(self, key, input_size: int = INPUT_SIZE, hidden_size: int = HIDDEN_SIZE, dtype=jnp.float32) -> Any:
        """Params with every bias-like tensor random and nonzero."""
        k_init, k_b, k_extra = jax.random.split(key, 3)
        params = self.module.init(k_init, input_size, hidden_size, dtype=dtype, **dict(self.kwargs))
        fields = [f for f in BIAS_LIKE.get(self.family, ("b",)) if getattr(params, f, None) is not None]
        keys = [k_b, k_extra] + [jax.random.fold_in(k_extra, i) for i in range(2, len(fields))]
        for k, name in zip(keys, fields):
            value = getattr(params, name)
            scale = RANDOM_SCALE.get((self.family, name), 0.5)
            params = params._replace(**{name: scale * jax.random.normal(k, value.shape, dtype)})
        return params

    def random_carry(self, key, params: Any, batch_shape: tuple = ()) -> Any:
        """A nonzero carry, each leaf shaped as ``initial_carry``'s, in the params' dtype."""
        leaves, treedef = jax.tree.flatten(self.module.initial_carry(params, batch_shape))
        keys = jax.random.split(key, len(leaves))
        return treedef.unflatten([0.5 * jax.random.normal(k, z.shape, z.dtype) for k, z in zip(keys, leaves)])


# Bias-like fields per family (default ``("b",)``): tensors ``init`` sets to constants, or to a
# function of other params, replaced by random values so that misapplying them shows.
BIAS_LIKE = {
    "lstm": ("b", "w_peep"),
    "gru": ("b", "b_hn"),
    "indrnn": ("b", "u"),  # u ~ U(0, 1) at init: random signs, and |u| past recurrent_max (the clip)
    "lru": ("gamma_log",),  # γ = sqrt(1 − |λ|²) at init: random, so γ must be read, not recomputed
    "slstm": ("b", "r"),  # r (the block-diagonal recurrence) starts at zero, as in xlstm
    "mlstm": ("b_i", "b_f", "b_o"),
    "rglru": ("b_a", "b_i"),
    "selective_ssm": ("b_dt", "D"),  # D = 1 at init
    "hawk": ("b_y", "b_x", "b_out"),
    "cfc": ("b",),
    "ltc": ("input_b", "output_b"),  # zeros and ones at init (ncps)
}
RANDOM_SCALE = {("indrnn", "u"): 1.0}  # default 0.5

# Option variants per registered name: {case id: init options}. A name not listed here gets one
# case, its name as id, default options.
VARIANTS = {
    "elman": {"elman-tanh": {"activation": "tanh"}, "elman-relu": {"activation": "relu"},
              "elman-sigmoid": {"activation": "sigmoid"}},
    "lstm": {"lstm": {}, "lstm-peephole": {"peephole": True}},
    "gru": {"gru-reset-after": {"reset_after": True}, "gru-reset-before": {"reset_after": False}},
    # Dense connectivity: at 4 units the default 10% would draw a nilpotent W (spectral radius 0,
    # which init rejects); leaky, with every input connected. (The circulant storage, whose offsets
    # are static metadata drawn from the key, is covered by test_reservoir.)
    "reservoir": {"reservoir": {"connectivity": 1.0, "input_connectivity": 1.0, "leak_rate": 0.6,
                                "spectral_radius": 0.9}},
    "mingru": {"mingru": {}, "mingru-log-space": {"log_space": True}},
    "minlstm": {"minlstm": {}, "minlstm-log-space": {"log_space": True}},
    "indrnn": {"indrnn-relu": {"activation": "relu"}, "indrnn-recurrent-max": {"recurrent_max": 0.5}},
    "lru": {"lru": {}, "lru-ring": {"r_min": 0.5, "r_max": 0.95, "max_phase": math.pi / 4}},
    # The modern cells, small: two heads of two units, three SSM states, short convolutions; one
    # case each (their own test files cover the other options against the reference packages).
    # The CfC and LTC cases take no elapsed-time feature (Δt = 1), so their input is D wide like
    # every case's; tests/test_cfc.py covers Δt as an input.
    "slstm": {"slstm": {"num_heads": 2}},
    "mlstm": {"mlstm": {"num_heads": 2}},
    "rglru": {"rglru": {"num_heads": 2}},
    "selective_ssm": {"selective_ssm": {"state_size": 3}},
    "hawk": {"hawk": {"num_heads": 2, "conv_width": 3}},
    "mamba": {"mamba": {"state_size": 3, "conv_width": 3}},
    "cfc": {"cfc": {"backbone_units": 8, "elapsed_time": False}},
    "ltc": {"ltc": {"ode_unfolds": 3, "elapsed_time": False}},
}

# Registered families left out of the common suite, each with the reason. (The reservoir fits:
# it is in.)
EXCLUDED = {
    # Its carry is nested and not (*batch, H) per field (controller LSTMCarry, memory (*batch, N, M),
    # reads, weightings), its output is H + R·M wide, and numpy_reference has no transcription of it:
    # tests/test_ntm.py runs the same checks (NumPy transcription, check_grads, rnn == Python loop,
    # lengths, gradient_flow, bad inputs) with its own reference. Move it to VARIANTS (with small
    # memory options) once numpy_reference transcribes it.
    "ntm": "covered by tests/test_ntm.py with its own NumPy transcription",
}


def _cases() -> list:
    cases = []
    for name in recurrax.registered_cells():
        if name in EXCLUDED:
            continue
        for case_id, options in VARIANTS.get(name, {name: {}}).items():
            cases.append(CellCase(case_id, name, tuple(options.items())))
    return cases


CASES = _cases()

CASES_BY_ID = {case.id: case for case in CASES}

_BUILT_IN = {recurrax.ElmanParams: "elman", recurrax.LSTMParams: "lstm", recurrax.GRUParams: "gru",
             recurrax.ReservoirParams: "reservoir", recurrax.MinGRUParams: "mingru",
             recurrax.MinLSTMParams: "minlstm", recurrax.IndRNNParams: "indrnn", recurrax.LRUParams: "lru",
             recurrax.slstm.SLSTMParams: "slstm", recurrax.mlstm.MLSTMParams: "mlstm",
             recurrax.rglru.RGLRUParams: "rglru", recurrax.selective_ssm.SelectiveSSMParams: "selective_ssm",
             recurrax.hawk.HawkParams: "hawk", recurrax.mamba.MambaParams: "mamba",
             recurrax.cfc.CfCParams: "cfc", recurrax.ltc.LTCParams: "ltc"}


def family_of(params: Any) -> recurrax.CellFamily:
    """The built-in family of some cell params (tests only: the library never looks families up by type)."""
    return recurrax.cells.resolve_family(_BUILT_IN[type(params)])


def layer_params(case_id: str, key, input_size: int, hidden_size: int, learned_initial: bool = False):
    """An ``RNNParams`` of the given case, with a random learned initial state if asked."""
    k_cell, k_init = jax.random.split(key)
    case = CASES_BY_ID[case_id]
    cell = case.init(k_cell, input_size, hidden_size)
    initial = case.random_carry(k_init, cell) if learned_initial else None
    return recurrax.RNNParams(cell=cell, initial=initial, family=case.cell)


def bidirectional_params(case_id: str, key, input_size: int, hidden_size: int, merge: str):
    """A ``BidirectionalParams`` of two independent layers of the given case."""
    k_f, k_b = jax.random.split(key)
    return recurrax.BidirectionalParams(layer_params(case_id, k_f, input_size, hidden_size),
                                        layer_params(case_id, k_b, input_size, hidden_size),
                                        recurrax.Merge(merge))
