"""Synthetic long-range tasks, generated in code from a PRNG key (nothing downloads).

Each generator returns a ``Task``: inputs ``xs (B, T, D)``, integer or real ``targets`` per
step, and ``teaching (B, T)``, the steps whose loss counts. Chance levels are stated so results
can be read against them.

- ``adding_problem`` (Hochreiter & Schmidhuber 1997): regression, predicting the mean gives
  MSE ≈ 0.167;
- ``copy_memory`` (Arjovsky et al. 2016): reproduce 10 symbols after a delay;
- ``temporal_order`` (Hochreiter & Schmidhuber 1997, task 6a; Pascanu et al. 2013): the order
  of two marked symbols among distractors, 4 classes;
- ``recall_task``: name the symbol flagged exactly L steps before the end (the truncated-vs-full
  BPTT study);
- ``selective_copying`` (Gu & Dao 2023, §3.1): repeat, in order, the data tokens scattered among
  noise tokens;
- ``induction_heads`` (Olsson et al. 2022; Gu & Dao 2023, §4.1): name the token that followed a
  special token the first time it appeared;
- ``copy`` (Graves et al. 2014, §4.1): reproduce a variable-length sequence of random bit vectors
  after a delimiter, scored with ``bit_errors`` (bits wrong per sequence);
- ``associative_recall`` (Graves et al. 2014, §4.3): after a list of items, give the item that
  followed a queried one;
- ``pathological(name, key, batch, T)``: the pathological problems of Hochreiter & Schmidhuber
  (1997) as posed by Martens & Sutskever (2011): addition, multiplication, XOR, temporal order,
  3-bit temporal order, random permutation and noiseless memorisation, each at a timescale T,
  scored with its published success criterion by ``success``.

Sequence-to-sequence tasks are text pairs ``(source, target)`` drawn with NumPy from an integer
seed (strings live on the host; ``recurrax.vocab`` turns them into padded id batches):

- ``reverse_pairs``: a random string and its reverse;
- ``sort_pairs``: a random string of digits and its digits in ascending order;
- ``date_pairs``: a date written as "3 March 2021", "March 3, 2021" or "03/03/21", and its ISO
  form "2021-03-03".
"""

from __future__ import annotations

import calendar
import datetime
import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrax._checks import check_positive_int


class Task(NamedTuple):
    """A batch of a synthetic sequence task."""

    xs: jax.Array  # (B, T, D) float32 inputs
    targets: jax.Array  # (B, T) int32 classes, (B, T, 1) float32 regression targets, or (B, T, bits) 0/1
    teaching: jax.Array  # (B, T) bool: the steps whose loss counts


def _last_step_only(batch_size: int, length: int) -> jax.Array:
    return jnp.zeros((batch_size, length), bool).at[:, -1].set(True)


def adding_problem(key: jax.Array, batch_size: int, length: int) -> Task:
    """Two marked values among ``length`` uniform ones; the target is their sum, at the last step.

    Inputs ``(B, T, 2)``: a value in ``[0, 1)`` and a marker (one marked step in each half of
    the sequence, as in Le et al. 2015). Targets ``(B, T, 1)`` (the sum, repeated). The sum of
    two U(0, 1) has variance 1/6: predicting its mean 1 gives MSE ≈ 0.167. The pathological
    version of Martens & Sutskever (2011), with variable lengths and other marker windows, is
    ``pathological("addition", ...)``.
    """
    batch_size, length = check_positive_int(batch_size, "batch_size"), check_positive_int(length, "length")
    if length < 2:
        raise ValueError(f"Expected length >= 2 (one marker per half), got {length}.")
    xs, first, second, teaching = _marked_pair(
        key, batch_size, length, windows=((0.0, 0.5), (0.5, 1.0)), max_length=length, binary=False, signals=False
    )
    total = first + second
    targets = jnp.broadcast_to(total[:, None, None], (batch_size, length, 1))
    return Task(xs, targets, teaching)


def _steps(window: tuple, length: int, low: int, what: str) -> tuple[int, int]:
    """The step range ``[⌊lo·T⌋, ⌊hi·T⌋)`` of a window given as fractions of ``T`` (at least ``low``)."""
    lo, hi = window
    # The epsilon keeps e.g. 0.57 * 100 = 56.99999999999999 at 57.
    start, stop = max(low, math.floor(lo * length + 1e-9)), math.floor(hi * length + 1e-9)
    if not 0.0 <= lo < hi <= 1.0 or start >= stop:
        raise ValueError(
            f"Expected {what} windows (lo, hi) with 0 <= lo < hi <= 1 holding at least one step at "
            f"T = {length}, got {window!r}."
        )
    return start, stop


def _check_max_length(length: int, max_length: int | None) -> int:
    if max_length is None:
        return length
    max_length = check_positive_int(max_length, "max_length")
    if max_length < length:
        raise ValueError(f"Expected max_length >= length, got {max_length} < {length}.")
    return max_length


def _sequence_lengths(key: jax.Array | None, batch_size: int, length: int, max_length: int) -> jax.Array:
    """``(B,)`` lengths uniform in ``[length, max_length]`` (all ``length`` without a key)."""
    if key is None:
        return jnp.full((batch_size,), length, jnp.int32)
    return jax.random.randint(key, (batch_size,), length, max_length + 1)


def _marked_pair(
    key: jax.Array, batch_size: int, length: int, *, windows: tuple, max_length: int, binary: bool, signals: bool
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The two-operand layout of the adding problem and its relatives (H&S 1997, exp. 4 and 5).

    Channel 0 holds a value per step (U[0, 1), or a fair bit when ``binary``); channel 1 marks
    one step in each of the two ``windows`` with 1. With ``signals``, channel 1 is also −1 at
    the first step and three steps before the answer (the "prediction is coming" cue of the
    authors' code; H&S 1997 mark the sequence's ends with −1). Sequence lengths are uniform in
    ``[length, max_length]``; steps past a sequence's end are zero; ``teaching`` marks its last
    step. Returns ``(xs, first operand, second operand, teaching)``.
    """
    variable = max_length > length
    keys = jax.random.split(key, 4 if variable else 3)
    k_values, k_first, k_second = keys[:3]
    lengths = _sequence_lengths(keys[3] if variable else None, batch_size, length, max_length)
    low = 1 if signals else 0  # step 0 carries the start signal
    (a0, a1), (b0, b1) = (_steps(w, length, low, "marker") for w in windows)
    if signals and b1 > length - 4:
        raise ValueError(f"Expected the marker windows to end before the cue at T − 4, got {windows!r} at T = {length}.")
    if binary:
        values = jax.random.bernoulli(k_values, 0.5, (batch_size, max_length)).astype(jnp.float32)
    else:
        values = jax.random.uniform(k_values, (batch_size, max_length))
    first = jax.random.randint(k_first, (batch_size,), a0, a1)
    second = jax.random.randint(k_second, (batch_size,), b0, b1)
    steps = jnp.arange(max_length)[None]
    end = lengths[:, None]
    marks = ((steps == first[:, None]) | (steps == second[:, None])).astype(jnp.float32)
    if signals:
        marks = jnp.where((steps == 0) | (steps == end - 4), -1.0, marks)
    valid = steps < end
    xs = jnp.stack([jnp.where(valid, values, 0.0), jnp.where(valid, marks, 0.0)], axis=-1)
    rows = jnp.arange(batch_size)
    return xs, values[rows, first], values[rows, second], steps == end - 1


def copy_memory(key: jax.Array, batch_size: int, delay: int, *, num_symbols: int = 8, copy_length: int = 10) -> Task:
    """Copy ``copy_length`` symbols after ``delay`` blank steps (Arjovsky et al. 2016).

    Sequence length ``T = delay + 2·copy_length``. Inputs are one-hot over ``num_symbols + 2``
    classes (0 blank, 1..num_symbols data, num_symbols + 1 the "recall now" delimiter, shown at
    step ``delay + copy_length − 1``); targets are blank everywhere except the last
    ``copy_length`` steps, which must repeat the data. Every step is scored; the memoryless
    baseline (blanks, then uniform guesses) has cross-entropy ``copy_length·log(num_symbols)/T``.
    """
    batch_size, delay = check_positive_int(batch_size, "batch_size"), check_positive_int(delay, "delay")
    num_symbols = check_positive_int(num_symbols, "num_symbols")
    copy_length = check_positive_int(copy_length, "copy_length")
    length = delay + 2 * copy_length
    data = jax.random.randint(key, (batch_size, copy_length), 1, num_symbols + 1)
    blanks = jnp.zeros((batch_size, length - copy_length), jnp.int32)
    inputs = jnp.concatenate([data, blanks], axis=1).at[:, delay + copy_length - 1].set(num_symbols + 1)
    targets = jnp.concatenate([jnp.zeros((batch_size, length - copy_length), jnp.int32), data], axis=1)
    xs = jax.nn.one_hot(inputs, num_symbols + 2, dtype=jnp.float32)
    return Task(xs, targets, jnp.ones((batch_size, length), bool))


def temporal_order(
    key: jax.Array,
    batch_size: int,
    length: int,
    *,
    windows: tuple = ((0.1, 0.2), (0.5, 0.6)),
    max_length: int | None = None,
) -> Task:
    """Classify the order of marked symbols (X or Y) among distractors: XX, XY, YX or YY.

    Hochreiter & Schmidhuber (1997), task 6a, scaled to ``length``: symbols ``a, b, c, d``
    everywhere, ``B`` first and ``E`` last, the first relevant symbol at a step in
    ``[0.1 T, 0.2 T)`` and the second in ``[0.5 T, 0.6 T)``. Inputs one-hot over 8 symbols
    (a–d = 0–3, X = 4, Y = 5, B = 6, E = 7); the class is scored at the last step. Chance
    accuracy: 1/4.

    ``windows`` gives one ``(lo, hi)`` window per relevant symbol as fractions of ``T`` (in
    order, not overlapping): with three the task is H&S's 6b, 8 classes, the first symbol the
    most significant bit (class ``4·[1st is Y] + 2·[2nd is Y] + [3rd is Y]``). ``max_length``
    draws each sequence's length uniformly from ``[length, max_length]`` (H&S: 100–110): ``E``
    and the scored step are at each sequence's own last step, and the steps after it are zero
    vectors (padding). With the defaults the draws are those of the fixed-length version.
    """
    batch_size, length = check_positive_int(batch_size, "batch_size"), check_positive_int(length, "length")
    if length < 20:
        raise ValueError(f"Expected length >= 20 (the marked windows need room), got {length}.")
    max_length = _check_max_length(length, max_length)
    count = len(windows)
    bounds = [_steps(w, length, 1, "temporal-order") for w in windows]
    if count < 1 or any(b[0] < a[1] for a, b in itertools.pairwise(bounds)) or bounds[-1][1] > length - 1:
        raise ValueError(
            f"Expected one or more increasing, non-overlapping windows before the last step, got {windows!r}."
        )
    variable = max_length > length
    keys = jax.random.split(key, 2 + count + int(variable))
    k_noise, k_class = keys[0], keys[1]
    lengths = _sequence_lengths(keys[-1] if variable else None, batch_size, length, max_length)
    symbols = jax.random.randint(k_noise, (batch_size, max_length), 0, 4)  # a, b, c, d
    label = jax.random.randint(k_class, (batch_size,), 0, 2**count)  # XX, XY, YX, YY for two
    rows = jnp.arange(batch_size)
    for i, (k, (start, stop)) in enumerate(zip(keys[2 : 2 + count], bounds)):
        position = jax.random.randint(k, (batch_size,), start, stop)
        symbols = symbols.at[rows, position].set(4 + (label >> (count - 1 - i)) % 2)  # X = 4, Y = 5
    steps = jnp.arange(max_length)[None]
    end = lengths[:, None]
    symbols = jnp.where(steps == end - 1, 7, symbols.at[:, 0].set(6))  # B first, E last
    symbols = jnp.where(steps < end, symbols, -1)  # one_hot(-1) is the zero vector: padding
    xs = jax.nn.one_hot(symbols, 8, dtype=jnp.float32)
    targets = jnp.broadcast_to(label[:, None], (batch_size, max_length)).astype(jnp.int32)
    return Task(xs, targets, steps == end - 1)


def selective_copying(
    key: jax.Array, batch_size: int, length: int, *, num_tokens: int = 16, vocab_size: int = 16
) -> Task:
    """Selective copying (Gu & Dao 2023, §3.1 and appendix E.1): repeat the data tokens, in order.

    Tokens: 0 is noise, ``1 … vocab_size − 2`` are data, ``vocab_size − 1`` is the marker. The
    first ``length − num_tokens`` steps are noise except ``num_tokens`` data tokens (uniform) at
    distinct random steps; the last ``num_tokens`` steps show the marker, and their targets are
    the data tokens in the order they appeared. Unlike the plain copy task the data's positions
    vary, so a model must select by content, not by time. Inputs one-hot ``(B, T, vocab_size)``;
    targets ``(B, T)`` int32 (0 outside the answer); ``teaching`` the last ``num_tokens`` steps.
    Chance per token: ``1 / (vocab_size − 2)``. The paper's setting: T = 4096, 16 tokens, a vocabulary
    of 16.

    >>> task = selective_copying(jax.random.key(0), 2, 10, num_tokens=3, vocab_size=6)
    >>> inputs = task.xs.argmax(-1)
    >>> shown = [row[row > 0].tolist() for row in inputs[:, :-3]]
    >>> bool((inputs[:, -3:] == 5).all()), shown == task.targets[:, -3:].tolist()
    (True, True)
    """
    batch_size, length = check_positive_int(batch_size, "batch_size"), check_positive_int(length, "length")
    num_tokens, vocab_size = check_positive_int(num_tokens, "num_tokens"), check_positive_int(vocab_size, "vocab_size")
    if vocab_size < 3:
        raise ValueError(f"Expected vocab_size >= 3 (noise, a data token, the marker), got {vocab_size}.")
    if length < 2 * num_tokens:
        raise ValueError(
            f"Expected length >= 2·num_tokens = {2 * num_tokens} (the data, then the answer), got {length}."
        )
    k_place, k_data = jax.random.split(key)
    span = length - num_tokens
    # num_tokens distinct steps of the first `span`, in increasing order, per sequence
    order = jnp.argsort(jax.random.uniform(k_place, (batch_size, span)), axis=1)
    positions = jnp.sort(order[:, :num_tokens], axis=1)
    data = jax.random.randint(k_data, (batch_size, num_tokens), 1, vocab_size - 1)
    rows = jnp.arange(batch_size)[:, None]
    inputs = jnp.zeros((batch_size, length), jnp.int32).at[rows, positions].set(data)
    inputs = inputs.at[:, span:].set(vocab_size - 1)
    targets = jnp.zeros((batch_size, length), jnp.int32).at[:, span:].set(data)
    teaching = jnp.zeros((batch_size, length), bool).at[:, span:].set(True)
    return Task(jax.nn.one_hot(inputs, vocab_size, dtype=jnp.float32), targets, teaching)


def induction_heads(key: jax.Array, batch_size: int, length: int, *, vocab_size: int = 16) -> Task:
    """Induction heads (Olsson et al. 2022; Gu & Dao 2023, §4.1): recall what followed a special token.

    Tokens ``0 … vocab_size − 2`` are ordinary, ``vocab_size − 1`` is special. Every step shows a
    uniform ordinary token, except the special token at one step ``p`` uniform in ``[0, T − 3]``
    and again at the last step; the target at the last step is the token at ``p + 1``. This is
    associative recall with one key: the model must find the special token by its content and
    hold what came next for up to ``T − 2`` steps. Inputs one-hot ``(B, T, vocab_size)``; targets
    ``(B, T)`` int32 (the answer, repeated); ``teaching`` the last step. Chance: ``1 / (vocab_size − 1)``.
    The paper's setting: T = 256, a vocabulary of 16.

    >>> task = induction_heads(jax.random.key(0), 3, 12, vocab_size=5)
    >>> inputs = task.xs.argmax(-1)
    >>> p = (inputs[:, :-1] == 4).argmax(1)
    >>> bool((inputs[:, -1] == 4).all()), (inputs[jnp.arange(3), p + 1] == task.targets[:, -1]).tolist()
    (True, [True, True, True])
    """
    batch_size, length = check_positive_int(batch_size, "batch_size"), check_positive_int(length, "length")
    vocab_size = check_positive_int(vocab_size, "vocab_size")
    if vocab_size < 2 or length < 3:
        raise ValueError(
            f"Expected vocab_size >= 2 and length >= 3 (the special token, its successor, the query), "
            f"got {vocab_size} and {length}."
        )
    k_tokens, k_place = jax.random.split(key)
    special = vocab_size - 1
    inputs = jax.random.randint(k_tokens, (batch_size, length), 0, special)
    position = jax.random.randint(k_place, (batch_size,), 0, length - 2)
    rows = jnp.arange(batch_size)
    inputs = inputs.at[rows, position].set(special).at[:, -1].set(special)
    answer = inputs[rows, position + 1]
    targets = jnp.broadcast_to(answer[:, None], (batch_size, length)).astype(jnp.int32)
    return Task(jax.nn.one_hot(inputs, vocab_size, dtype=jnp.float32), targets, _last_step_only(batch_size, length))


def recall_task(key: jax.Array, batch_size: int, *, lag: int, length: int, vocab_size: int = 8) -> Task:
    """Recall at lag L: name, at the last step, the symbol shown at the flagged step T − L.

    Every step shows a uniformly random symbol of ``vocab_size`` (one-hot); step ``T − L`` also
    sets a flag channel (inputs ``(B, T, V + 1)``). The answer is read at step ``T − 1``, so the
    dependency spans ``L`` steps counting both ends: a TBPTT window of the last ``k2`` steps
    contains the flagged step iff ``k2 >= L``. Chance accuracy is ``1 / vocab_size``.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    length = check_positive_int(length, "length")
    vocab_size = check_positive_int(vocab_size, "vocab_size")
    lag = check_positive_int(lag, "lag")
    if lag > length:
        raise ValueError(f"Expected lag <= length (the flagged step must be in the sequence), got {lag} > {length}.")
    symbols = jax.random.randint(key, (batch_size, length), 0, vocab_size)
    flag = jnp.zeros((batch_size, length, 1), jnp.float32).at[:, length - lag].set(1.0)
    xs = jnp.concatenate([jax.nn.one_hot(symbols, vocab_size, dtype=jnp.float32), flag], axis=-1)
    answer = symbols[:, length - lag]
    targets = jnp.broadcast_to(answer[:, None], (batch_size, length)).astype(jnp.int32)
    return Task(xs, targets, _last_step_only(batch_size, length))


# --------------------------------------------------------------------------- pathological problems
#
# The problems of Hochreiter & Schmidhuber (1997) as Martens & Sutskever (2011, §5 and the
# supplement's §2) pose them, at a "timescale" T: sequences of T to 1.1 T steps (the random
# permutation and memorisation problems: exactly T) with the relevant inputs in windows that are
# fixed fractions of T. The layouts follow the authors' released HF code (Sutskever's
# ``opt/d/seq/utils.py`` and its problem file, where the windows are ``f(x) = int(x·T/100)``);
# where that code and this module differ it is said at the generator.


class Pathological(NamedTuple):
    """How a pathological problem is scored: its output kind and size (see ``success``)."""

    kind: str  # "regression" (squared error), "binary" (one logit) or "classes" (softmax)
    output_size: int  # the model's output units


PATHOLOGICAL = {
    "addition": Pathological("regression", 1),
    "multiplication": Pathological("regression", 1),
    "xor": Pathological("binary", 1),
    "temporal_order": Pathological("classes", 4),
    "temporal_order_3bit": Pathological("classes", 8),
    "random_permutation": Pathological("classes", 100),
    "memorization": Pathological("classes", 3),
}

# Windows as fractions of T (the authors' code: first operand in [f(1), f(10)), second in
# [f(10), f(50)); temporal order X/Y in [f(1), f(10)] and [f(40), f(50)]; 3-bit in [f(1), f(10)],
# [f(30), f(40)], [f(50), f(60)]; here every window is half-open).
OPERAND_WINDOWS = ((0.01, 0.1), (0.1, 0.5))
ORDER_WINDOWS = ((0.01, 0.1), (0.4, 0.5))
ORDER_3BIT_WINDOWS = ((0.01, 0.1), (0.3, 0.4), (0.5, 0.6))


def random_permutation(key: jax.Array, batch_size: int, length: int, *, num_symbols: int = 100) -> Task:
    """The random permutation problem (Martens & Sutskever 2011): recall the first symbol at the end.

    Step 0 shows symbol 0 or 1 (a fair draw); steps 1 … T−1 show symbols drawn uniformly from
    ``2 … num_symbols − 1`` (the authors' code notes that, despite the name, they are drawn
    independently, not as a permutation). At every step the target is the next input, and at
    the last step it is the first symbol: the loss counts every step (``teaching`` all true),
    but only the last step can be learned beyond chance and only it is scored by ``success``.
    Inputs one-hot ``(B, T, num_symbols)``, targets ``(B, T)`` int32. Chance at the last step: 1/2.

    >>> task = random_permutation(jax.random.key(0), 2, 6, num_symbols=5)
    >>> bool((task.targets[:, -1] == task.xs[:, 0].argmax(-1)).all())
    True
    """
    batch_size, length = check_positive_int(batch_size, "batch_size"), check_positive_int(length, "length")
    num_symbols = check_positive_int(num_symbols, "num_symbols")
    if length < 2 or num_symbols < 3:
        raise ValueError(f"Expected length >= 2 and num_symbols >= 3, got {length} and {num_symbols}.")
    k_first, k_rest = jax.random.split(key)
    first = jax.random.randint(k_first, (batch_size, 1), 0, 2)
    rest = jax.random.randint(k_rest, (batch_size, length - 1), 2, num_symbols)
    symbols = jnp.concatenate([first, rest], axis=1)
    targets = jnp.concatenate([rest, first], axis=1).astype(jnp.int32)
    xs = jax.nn.one_hot(symbols, num_symbols, dtype=jnp.float32)
    return Task(xs, targets, jnp.ones((batch_size, length), bool))


def memorization(
    key: jax.Array, batch_size: int, length: int, *, num_chars: int = 5, num_values: int = 2
) -> Task:
    """Noiseless memorisation (Martens & Sutskever 2011): repeat ``num_chars`` symbols after a delay.

    ``T`` steps in all: the first ``num_chars`` steps show the symbols (uniform over
    ``num_values``: the 5-bit problem is 5 × 2 values, the "20-bit" one 10 × 5), then a blank
    input until the "go" signal at step ``T − num_chars − 1``, then blanks while the model
    repeats the symbols over the last ``num_chars`` steps. Inputs one-hot over
    ``num_values + 2`` (the values, go, blank); targets ``(B, T)`` over ``num_values + 1``
    classes (the values, blank): blank everywhere except the last ``num_chars`` steps. Every
    step is taught (the authors' default); ``success`` scores the ``num_chars`` recalled symbols.

    >>> task = memorization(jax.random.key(0), 1, 12, num_chars=3)
    >>> task.xs[0].argmax(-1).tolist()[3:], task.targets[0, :-3].tolist()
    ([3, 3, 3, 3, 3, 2, 3, 3, 3], [2, 2, 2, 2, 2, 2, 2, 2, 2])
    """
    batch_size, length = check_positive_int(batch_size, "batch_size"), check_positive_int(length, "length")
    num_chars, num_values = check_positive_int(num_chars, "num_chars"), check_positive_int(num_values, "num_values")
    if length < 2 * num_chars + 1:
        raise ValueError(f"Expected length >= 2·num_chars + 1 = {2 * num_chars + 1}, got {length}.")
    go, blank = num_values, num_values + 1
    data = jax.random.randint(key, (batch_size, num_chars), 0, num_values)
    inputs = jnp.full((batch_size, length), blank).at[:, :num_chars].set(data).at[:, length - num_chars - 1].set(go)
    targets = jnp.full((batch_size, length), num_values).at[:, length - num_chars :].set(data)
    xs = jax.nn.one_hot(inputs, num_values + 2, dtype=jnp.float32)
    return Task(xs, targets.astype(jnp.int32), jnp.ones((batch_size, length), bool))


def pathological(name: str, key: jax.Array, batch_size: int, length: int) -> Task:
    """A batch of the pathological problem ``name`` at timescale ``T = length`` (Martens & Sutskever 2011).

    - ``"addition"``, ``"multiplication"``: inputs ``(B, 1.1T, 2)``, a U[0, 1) value and a
      marker channel (1 at one step in ``[0.01T, 0.1T)`` and one in ``[0.1T, 0.5T)``, −1 at the
      first step and three steps before the answer); each sequence is T to 1.1 T steps long and
      the target ``(B, 1.1T, 1)``, the sum or product of the two marked values, is scored at its
      last step (H&S 1997 experiments 4 and 5). Output: one linear unit, squared error.
    - ``"xor"``: the same with fair bits as values and their XOR as target (one logit,
      cross-entropy). The authors' code runs XOR at half the lengths (T/2 to 0.55 T); here it
      shares the addition layout so that every problem is at the same T.
    - ``"temporal_order"`` (4 classes) and ``"temporal_order_3bit"`` (8 classes):
      ``temporal_order`` with the windows ``ORDER_WINDOWS`` / ``ORDER_3BIT_WINDOWS`` and lengths
      T to 1.1 T (H&S 1997 experiment 6a/6b place them at 10–20, 50–60 (and 30–40) of 100–110).
    - ``"random_permutation"``: ``random_permutation`` with 100 symbols, T steps.
    - ``"memorization"``: ``memorization``, the 5-bit problem (5 binary symbols), T steps.

    Score a model's outputs with ``success(name, outputs, task)``; ``PATHOLOGICAL[name]`` gives
    the output kind and size.

    >>> task = pathological("addition", jax.random.key(0), 4, 100)
    >>> task.xs.shape, task.targets.shape, task.teaching.sum(1).tolist()
    ((4, 110, 2), (4, 110, 1), [1, 1, 1, 1])
    """
    if name not in PATHOLOGICAL:
        raise ValueError(f"Expected a pathological problem among {tuple(PATHOLOGICAL)}, got {name!r}.")
    batch_size, length = check_positive_int(batch_size, "batch_size"), check_positive_int(length, "length")
    max_length = math.floor(1.1 * length + 1e-9)
    if name in ("addition", "multiplication", "xor"):
        if length < 20:
            raise ValueError(f"Expected length >= 20 (the marker windows need room), got {length}.")
        xs, a, b, teaching = _marked_pair(
            key, batch_size, length, windows=OPERAND_WINDOWS, max_length=max_length, binary=name == "xor",
            signals=True,
        )
        value = {"addition": a + b, "multiplication": a * b, "xor": jnp.abs(a - b)}[name]
        targets = jnp.broadcast_to(value[:, None, None], (batch_size, max_length, 1))
        return Task(xs, targets, teaching)
    if name == "temporal_order":
        return temporal_order(key, batch_size, length, windows=ORDER_WINDOWS, max_length=max_length)
    if name == "temporal_order_3bit":
        return temporal_order(key, batch_size, length, windows=ORDER_3BIT_WINDOWS, max_length=max_length)
    if name == "random_permutation":
        return random_permutation(key, batch_size, length)
    return memorization(key, batch_size, length)


class Success(NamedTuple):
    """The outcome of ``success``."""

    error_rate: float  # fraction of scored test cases that are wrong
    solved: bool  # error_rate < max_error_rate


def _scored(name: str, task: Task, output_size: int) -> jax.Array:
    if name == "random_permutation":  # only the recalled first symbol is long-range
        return jnp.zeros_like(task.teaching).at[..., -1].set(True)
    if name == "memorization":  # the recalled symbols, not the blanks
        return task.teaching & (task.targets < output_size - 1)
    return task.teaching


def success(
    name: str, outputs: jax.Array, task: Task, *, tolerance: float = 0.04, max_error_rate: float = 0.01
) -> Success:
    """Whether ``outputs`` solve the pathological problem ``name`` on the test batch ``task``.

    A scored output is wrong (the authors' ``zero_one_loss`` functions, HF code
    ``opt/d/seq/utils.py``):

    - regression (addition, multiplication): ``|y − t| > tolerance``, 0.04 as in Hochreiter &
      Schmidhuber (1997, experiments 4 and 5: a sequence is processed correctly if the absolute
      error at the end is below 0.04);
    - binary (XOR): the logit's sign differs from the target bit;
    - classes: the arg-max class differs from the target.

    The scored outputs are ``task.teaching``'s steps, except for the random permutation problem
    (the last step only: the other targets are random) and memorisation (the recalled symbols,
    not the blanks). The run has solved the problem when the fraction of wrong outputs is below
    ``max_error_rate``. The 1% default is our reading of Martens & Sutskever (2011) and
    Sutskever et al. (2013), who count a run as a success when its test zero-one error is
    below a small threshold; H&S (1997) required every one of 2000 consecutive sequences right.

    Args:
      name: a key of ``PATHOLOGICAL``.
      outputs: the model's outputs on ``task.xs``: ``(B, T, 1)`` for regression and binary
        (a logit), ``(B, T, C)`` logits for classes.
      task: the test batch (from ``pathological``).

    Returns:
      ``Success(error_rate, solved)``.

    >>> task = pathological("temporal_order", jax.random.key(0), 8, 50)
    >>> perfect = jax.nn.one_hot(task.targets, 4)
    >>> success("temporal_order", perfect, task)
    Success(error_rate=0.0, solved=True)
    """
    if name not in PATHOLOGICAL:
        raise ValueError(f"Expected a pathological problem among {tuple(PATHOLOGICAL)}, got {name!r}.")
    kind = PATHOLOGICAL[name].kind
    if outputs.ndim != task.teaching.ndim + 1 or tuple(outputs.shape[:-1]) != tuple(task.teaching.shape) or (
        kind != "classes" and outputs.shape[-1] != 1
    ):
        raise ValueError(
            f"Expected {name} outputs of shape {tuple(task.teaching.shape)} + (output units,), with one unit "
            f"for {kind} problems, got {tuple(outputs.shape)}."
        )
    if kind == "regression":
        wrong = jnp.abs(outputs[..., 0] - task.targets[..., 0]) > tolerance
    elif kind == "binary":
        wrong = (outputs[..., 0] > 0) != (task.targets[..., 0] > 0.5)
    else:
        wrong = jnp.argmax(outputs, axis=-1) != task.targets
    scored = _scored(name, task, outputs.shape[-1])
    rate = int(jnp.sum(wrong & scored)) / max(int(jnp.sum(scored)), 1)
    return Success(rate, rate < max_error_rate)


def _random_lengths(key: jax.Array, batch_size: int, low: int, high: int, what: str) -> jax.Array:
    low, high = check_positive_int(low, f"min_{what}"), check_positive_int(high, f"max_{what}")
    if low > high:
        raise ValueError(f"Expected min_{what} <= max_{what}, got {low} > {high}.")
    return jax.random.randint(key, (batch_size,), low, high + 1)


def copy(key: jax.Array, batch_size: int, *, min_length: int = 1, max_length: int = 20, num_bits: int = 8) -> Task:
    """The NTM copy task (Graves et al. 2014, §4.1): read random bit vectors, then write them back.

    Each sequence has its own length L, uniform in ``[min_length, max_length]`` (the paper
    trains on 1–20; ``min_length = max_length`` gives a fixed test length). Inputs
    ``(B, T, num_bits + 1)`` with ``T = 2·max_length + 1``: steps ``0 … L−1`` show the L random
    vectors (bits Bernoulli(1/2)) on the first ``num_bits`` channels, step ``L`` sets the delimiter
    channel (the last), and steps ``L+1 … 2L`` show nothing while the model writes the copy.
    Targets ``(B, T, num_bits)`` hold the vectors at steps ``L+1 … 2L`` (zeros elsewhere) and
    ``teaching`` marks those steps; the rest is padding. Score with ``bit_errors``; guessing
    gives ``num_bits·L/2`` errors per sequence.

    >>> task = copy(jax.random.key(0), 2, min_length=3, max_length=3)
    >>> task.xs.shape, task.targets.shape, task.teaching[0].astype(int).tolist()
    ((2, 7, 9), (2, 7, 8), [0, 0, 0, 0, 1, 1, 1])
    """
    batch_size, num_bits = check_positive_int(batch_size, "batch_size"), check_positive_int(num_bits, "num_bits")
    k_length, k_bits = jax.random.split(key)
    lengths = _random_lengths(k_length, batch_size, min_length, max_length, "length")
    time = 2 * max_length + 1
    bits = jax.random.bernoulli(k_bits, 0.5, (batch_size, max_length, num_bits)).astype(jnp.float32)
    steps = jnp.arange(time)[None, :]  # (1, T)
    length = lengths[:, None]  # (B, 1)
    shown = steps < length
    answer = (steps > length) & (steps <= 2 * length)
    rows = jnp.arange(batch_size)[:, None]
    read_at = jnp.clip(steps, 0, max_length - 1)
    write_at = jnp.clip(steps - length - 1, 0, max_length - 1)
    xs_bits = jnp.where(shown[..., None], bits[rows, read_at], 0.0)
    delimiter = (steps == length).astype(jnp.float32)[..., None]
    xs = jnp.concatenate([xs_bits, delimiter], axis=-1)
    targets = jnp.where(answer[..., None], bits[rows, write_at], 0.0)
    return Task(xs, targets, answer)


def associative_recall(
    key: jax.Array, batch_size: int, *, min_items: int = 2, max_items: int = 6, item_length: int = 3,
    num_bits: int = 6,
) -> Task:
    """Associative recall (Graves et al. 2014, §4.3): give the item that followed the queried one.

    An item is ``item_length`` random ``num_bits``-bit vectors (paper: 3 × 6 bits). Each
    sequence shows n items (n uniform in ``[min_items, max_items]``, paper 2–6), each after an
    item-delimiter step (channel ``num_bits``); then a query: a query-delimiter step (channel
    ``num_bits + 1``), one of the first n − 1 items (uniformly), and a query-delimiter step again;
    then ``item_length`` silent steps where the target is the item that followed the queried
    one. Inputs ``(B, T, num_bits + 2)``, ``T = (item_length + 1)·max_items + 2·item_length + 2``;
    targets ``(B, T, num_bits)`` and ``teaching`` at the answer steps; padding after them.

    >>> task = associative_recall(jax.random.key(0), 2, min_items=2, max_items=2)
    >>> task.xs.shape, int(task.teaching[0].sum())
    ((2, 16, 8), 3)
    """
    batch_size, num_bits = check_positive_int(batch_size, "batch_size"), check_positive_int(num_bits, "num_bits")
    item_length = check_positive_int(item_length, "item_length")
    if min_items < 2:
        raise ValueError(f"Expected min_items >= 2 (a queried item and the one after it), got {min_items!r}.")
    k_count, k_query, k_bits = jax.random.split(key, 3)
    counts = _random_lengths(k_count, batch_size, min_items, max_items, "items")
    query = jnp.floor(jax.random.uniform(k_query, (batch_size,)) * (counts - 1).astype(jnp.float32)).astype(jnp.int32)
    bits = jax.random.bernoulli(k_bits, 0.5, (batch_size, max_items, item_length, num_bits)).astype(jnp.float32)
    span = item_length + 1
    time = span * max_items + 2 * item_length + 2
    steps = jnp.arange(time)[None, :]  # (1, T)
    rows = jnp.arange(batch_size)[:, None]
    end = span * counts[:, None]  # first step after the items
    in_items = steps < end
    item, position = jnp.clip(steps // span, 0, max_items - 1), steps % span
    query_start = end + 1
    in_query = (steps >= query_start) & (steps < query_start + item_length)
    answer_start = query_start + item_length + 1
    answer = (steps >= answer_start) & (steps < answer_start + item_length)
    item_bits = bits[rows, item, jnp.clip(position - 1, 0, item_length - 1)]
    query_bits = bits[rows, query[:, None], jnp.clip(steps - query_start, 0, item_length - 1)]
    next_bits = bits[rows, jnp.clip(query[:, None] + 1, 0, max_items - 1), jnp.clip(steps - answer_start, 0, item_length - 1)]
    xs_bits = jnp.where((in_items & (position > 0))[..., None], item_bits, 0.0)
    xs_bits = jnp.where(in_query[..., None], query_bits, xs_bits)
    item_delimiter = (in_items & (position == 0)).astype(jnp.float32)[..., None]
    query_delimiter = ((steps == end) | (steps == query_start + item_length)).astype(jnp.float32)[..., None]
    xs = jnp.concatenate([xs_bits, item_delimiter, query_delimiter], axis=-1)
    targets = jnp.where(answer[..., None], next_bits, 0.0)
    return Task(xs, targets, answer)


def bit_errors(logits: jax.Array, targets: jax.Array, teaching: jax.Array) -> jax.Array:
    """Bits wrong per sequence after thresholding (Graves et al. 2014's copy and recall metric).

    A bit is predicted 1 where its logit is positive (probability > 1/2), and counted wrong where
    that differs from the target, on the ``teaching`` steps only. ``logits`` and ``targets``
    ``(*batch, T, bits)``, ``teaching`` ``(*batch, T)``; returns ``(*batch,)`` float32 counts.

    >>> logits = jnp.array([[[2.0, -1.0], [0.5, 0.5]]])
    >>> bit_errors(logits, jnp.array([[[1.0, 1.0], [0.0, 1.0]]]), jnp.array([[True, False]])).tolist()
    [1.0]
    """
    if logits.shape != targets.shape or tuple(teaching.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"Expected logits and targets of one shape (*batch, T, bits) and teaching (*batch, T), got "
            f"{tuple(logits.shape)}, {tuple(targets.shape)} and {tuple(teaching.shape)}."
        )
    wrong = (logits > 0) != (targets > 0.5)
    return jnp.sum(wrong & teaching[..., None], axis=(-2, -1)).astype(jnp.float32)


DIGITS = "0123456789"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _check_lengths(min_length: int, max_length: int) -> tuple[int, int]:
    min_length = check_positive_int(min_length, "min_length")
    max_length = check_positive_int(max_length, "max_length")
    if min_length > max_length:
        raise ValueError(f"Expected min_length <= max_length, got {min_length} > {max_length}.")
    return min_length, max_length


def _random_strings(seed: int, num: int, min_length: int, max_length: int, alphabet: str) -> list[str]:
    """``num`` strings over ``alphabet``, lengths uniform in ``[min_length, max_length]``."""
    num = check_positive_int(num, "num")
    min_length, max_length = _check_lengths(min_length, max_length)
    if not isinstance(alphabet, str) or not alphabet:
        raise ValueError(f"Expected a non-empty alphabet string, got {alphabet!r}.")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, max_length + 1, size=num)
    return ["".join(rng.choice(list(alphabet), size=int(n))) for n in lengths]


def reverse_pairs(
    seed: int, num: int, *, min_length: int = 1, max_length: int = 20, alphabet: str = LETTERS
) -> list[tuple[str, str]]:
    """``num`` pairs ``(s, reversed s)``, ``s`` uniform over ``alphabet`` with a uniform length.

    The first target symbol is the last source symbol: without attention the whole source must
    pass through the encoder's final state (the seeds' context bottleneck).

    >>> reverse_pairs(0, 2, min_length=3, max_length=5)
    [('nhibb', 'bbihn'), ('aevq', 'qvea')]
    """
    return [(s, s[::-1]) for s in _random_strings(seed, num, min_length, max_length, alphabet)]


def sort_pairs(seed: int, num: int, *, min_length: int = 1, max_length: int = 20) -> list[tuple[str, str]]:
    """``num`` pairs ``(digits, digits in ascending order)``, e.g. ``("3141", "1134")``.

    >>> sort_pairs(0, 2, min_length=3, max_length=5)
    [('52300', '00235'), ('0186', '0168')]
    """
    return [(s, "".join(sorted(s))) for s in _random_strings(seed, num, min_length, max_length, DIGITS)]


# Written forms of a date d (e.g. 2021-03-03); DD/MM/YY is day first, as in most of the world.
DATE_FORMATS = ("d Month yyyy", "Month d, yyyy", "dd/mm/yy")


def format_date(date: datetime.date, form: str) -> str:
    """``date`` written in one of ``DATE_FORMATS``: ``"3 March 2021"``, ``"March 3, 2021"``, ``"03/03/21"``.

    >>> format_date(datetime.date(2021, 3, 3), "Month d, yyyy")
    'March 3, 2021'
    """
    month = calendar.month_name[date.month]
    if form == "d Month yyyy":
        return f"{date.day} {month} {date.year}"
    if form == "Month d, yyyy":
        return f"{month} {date.day}, {date.year}"
    if form == "dd/mm/yy":
        return f"{date.day:02d}/{date.month:02d}/{date.year % 100:02d}"
    raise ValueError(f"Expected a date format in {DATE_FORMATS}, got {form!r}.")


def date_pairs(
    seed: int, num: int, *, formats: Sequence[str] = DATE_FORMATS, first_year: int = 1950, last_year: int = 2049
) -> list[tuple[str, str]]:
    """``num`` pairs ``(written date, ISO date)``: date normalisation, e.g. ``("3 March 2021", "2021-03-03")``.

    Dates are uniform over the days from 1 January ``first_year`` to 31 December ``last_year``,
    each written in a format drawn uniformly from ``formats`` (``DATE_FORMATS``). The two-digit
    year of "dd/mm/yy" is unambiguous only within one century, so the range may span at most 100
    years (the default 1950–2049: "49" is 2049, "50" is 1950).

    >>> date_pairs(0, 2)
    [('January 24, 2035', '2035-01-24'), ('12 September 2013', '2013-09-12')]
    """
    num = check_positive_int(num, "num")
    for form in formats:
        if form not in DATE_FORMATS:
            raise ValueError(f"Expected date formats among {DATE_FORMATS}, got {form!r}.")
    if not formats:
        raise ValueError(f"Expected at least one date format among {DATE_FORMATS}, got none.")
    if not 1 <= first_year <= last_year <= 9999:
        raise ValueError(f"Expected 1 <= first_year <= last_year <= 9999, got {first_year} and {last_year}.")
    if "dd/mm/yy" in formats and last_year - first_year >= 100:
        raise ValueError(
            f"Expected at most 100 years with the two-digit format dd/mm/yy, got {first_year}-{last_year}."
        )
    first = datetime.date(first_year, 1, 1).toordinal()
    span = datetime.date(last_year, 12, 31).toordinal() - first + 1
    rng = np.random.default_rng(seed)
    days = rng.integers(0, span, size=num)
    forms = rng.integers(0, len(formats), size=num)
    dates = [datetime.date.fromordinal(first + int(day)) for day in days]
    return [(format_date(date, formats[int(f)]), date.isoformat()) for date, f in zip(dates, forms)]
