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
  BPTT study).

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
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from recurrax._checks import check_positive_int


class Task(NamedTuple):
    """A batch of a synthetic sequence task."""

    xs: jax.Array  # (B, T, D) float32 inputs
    targets: jax.Array  # (B, T) int32 classes, or (B, T, 1) float32 regression targets
    teaching: jax.Array  # (B, T) bool: the steps whose loss counts


def _last_step_only(batch_size: int, length: int) -> jax.Array:
    return jnp.zeros((batch_size, length), bool).at[:, -1].set(True)


def adding_problem(key: jax.Array, batch_size: int, length: int) -> Task:
    """Two marked values among ``length`` uniform ones; the target is their sum, at the last step.

    Inputs ``(B, T, 2)``: a value in ``[0, 1)`` and a marker (one marked step in each half of
    the sequence, as in Le et al. 2015). Targets ``(B, T, 1)`` (the sum, repeated). The sum of
    two U(0, 1) has variance 1/6: predicting its mean 1 gives MSE ≈ 0.167.
    """
    batch_size, length = check_positive_int(batch_size, "batch_size"), check_positive_int(length, "length")
    if length < 2:
        raise ValueError(f"Expected length >= 2 (one marker per half), got {length}.")
    k_values, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_values, (batch_size, length))
    half = length // 2
    first = jax.random.randint(k_first, (batch_size,), 0, half)
    second = jax.random.randint(k_second, (batch_size,), half, length)
    steps = jnp.arange(length)[None]
    marks = (steps == first[:, None]) | (steps == second[:, None])
    total = jnp.sum(jnp.where(marks, values, 0.0), axis=1)
    xs = jnp.stack([values, marks.astype(jnp.float32)], axis=-1)
    targets = jnp.broadcast_to(total[:, None, None], (batch_size, length, 1))
    return Task(xs, targets, _last_step_only(batch_size, length))


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


def temporal_order(key: jax.Array, batch_size: int, length: int) -> Task:
    """Classify the order of two marked symbols (X or Y) among distractors: XX, XY, YX or YY.

    Hochreiter & Schmidhuber (1997), task 6a, scaled to ``length``: symbols ``a, b, c, d``
    everywhere, ``B`` first and ``E`` last, the first relevant symbol at a step in
    ``[0.1 T, 0.2 T)`` and the second in ``[0.5 T, 0.6 T)``. Inputs one-hot over 8 symbols;
    the class is scored at the last step. Chance accuracy: 1/4.
    """
    batch_size, length = check_positive_int(batch_size, "batch_size"), check_positive_int(length, "length")
    if length < 20:
        raise ValueError(f"Expected length >= 20 (the marked windows need room), got {length}.")
    k_noise, k_class, k_first, k_second = jax.random.split(key, 4)
    symbols = jax.random.randint(k_noise, (batch_size, length), 0, 4)  # a, b, c, d
    label = jax.random.randint(k_class, (batch_size,), 0, 4)  # XX, XY, YX, YY
    first = jax.random.randint(k_first, (batch_size,), length // 10, length // 5)
    second = jax.random.randint(k_second, (batch_size,), length // 2, 3 * length // 5)
    rows = jnp.arange(batch_size)
    symbols = symbols.at[rows, first].set(4 + label // 2).at[rows, second].set(4 + label % 2)  # X = 4, Y = 5
    symbols = symbols.at[:, 0].set(6).at[:, -1].set(7)  # B, E
    xs = jax.nn.one_hot(symbols, 8, dtype=jnp.float32)
    targets = jnp.broadcast_to(label[:, None], (batch_size, length)).astype(jnp.int32)
    return Task(xs, targets, _last_step_only(batch_size, length))


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
