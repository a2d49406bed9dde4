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
- ``copy`` (Graves et al. 2014, §4.1): reproduce a variable-length sequence of random bit vectors
  after a delimiter, scored with ``bit_errors`` (bits wrong per sequence);
- ``associative_recall`` (Graves et al. 2014, §4.3): after a list of items, give the item that
  followed a queried one.

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
    targets: jax.Array  # (B, T) int32 classes, (B, T, 1) float32 regression targets, or (B, T, bits) 0/1
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
