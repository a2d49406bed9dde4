"""``recurrax.tasks``: each generator's answer recomputed from its inputs with NumPy."""

import datetime
import re

import jax
import numpy as np
import pytest

from recurrax import tasks


def test_adding_problem_target_is_the_sum_of_the_marked_values():
    task = tasks.adding_problem(jax.random.key(0), 4096, 100)
    xs, targets = np.asarray(task.xs), np.asarray(task.targets)
    assert xs.shape == (4096, 100, 2) and targets.shape == (4096, 100, 1)
    marks = xs[..., 1]
    assert (marks[:, :50].sum(1) == 1).all() and (marks[:, 50:].sum(1) == 1).all()
    np.testing.assert_allclose(targets[:, -1, 0], (xs[..., 0] * marks).sum(1), rtol=1e-6)
    # Predicting the mean (1) gives the variance of a sum of two U(0, 1): 1/6.
    assert np.mean((targets[:, -1, 0] - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.01)
    assert np.asarray(task.teaching).sum(1).tolist() == [1] * 4096 and np.asarray(task.teaching)[:, -1].all()


def test_copy_memory_layout():
    task = tasks.copy_memory(jax.random.key(1), 3, delay=7, num_symbols=5, copy_length=4)
    inputs, targets = np.asarray(task.xs).argmax(-1), np.asarray(task.targets)
    assert inputs.shape == (3, 7 + 8)
    data = inputs[:, :4]
    assert ((1 <= data) & (data <= 5)).all()
    np.testing.assert_array_equal(inputs[:, 4:], np.where(np.arange(4, 15) == 7 + 4 - 1, 6, 0)[None].repeat(3, 0))
    np.testing.assert_array_equal(targets[:, -4:], data)
    assert (targets[:, :-4] == 0).all() and np.asarray(task.teaching).all()


def test_temporal_order_label_is_the_order_of_x_and_y():
    task = tasks.temporal_order(jax.random.key(2), 512, 100)
    symbols, labels = np.asarray(task.xs).argmax(-1), np.asarray(task.targets)[:, -1]
    assert (symbols[:, 0] == 6).all() and (symbols[:, -1] == 7).all()
    for row, label in zip(symbols, labels):
        positions = np.nonzero(row >= 4)[0]
        relevant = positions[(row[positions] == 4) | (row[positions] == 5)]
        assert len(relevant) == 2 and 10 <= relevant[0] < 20 and 50 <= relevant[1] < 60
        assert label == 2 * (row[relevant[0]] - 4) + (row[relevant[1]] - 4)
    assert set(labels.tolist()) == {0, 1, 2, 3}


def test_selective_copying_answer_is_the_data_in_order():
    task = tasks.selective_copying(jax.random.key(3), 256, 40, num_tokens=5, vocab_size=7)
    inputs, targets, teaching = np.asarray(task.xs).argmax(-1), np.asarray(task.targets), np.asarray(task.teaching)
    assert np.asarray(task.xs).sum(-1).min() == 1  # one-hot at every step
    for row, target, taught in zip(inputs, targets, teaching):
        data = [token for token in row[:35] if token != 0]  # noise is 0
        assert len(data) == 5 and all(1 <= token <= 5 for token in data)
        assert (row[35:] == 6).all() and target[35:].tolist() == data
        assert taught.tolist() == [False] * 35 + [True] * 5
    positions = np.stack([np.nonzero(row[:35])[0] for row in inputs])
    assert len(np.unique(positions[:, 0])) > 10  # the data move: a selection task, not a fixed copy
    assert set(np.unique(targets[:, 35:])) == set(range(1, 6))


def test_induction_heads_answer_follows_the_first_special_token():
    task = tasks.induction_heads(jax.random.key(4), 512, 30, vocab_size=6)
    inputs, targets = np.asarray(task.xs).argmax(-1), np.asarray(task.targets)
    for row, target in zip(inputs, targets):
        specials = np.nonzero(row == 5)[0]
        assert len(specials) == 2 and specials[-1] == 29 and specials[0] <= 27
        assert (target == row[specials[0] + 1]).all() and row[specials[0] + 1] != 5
    assert np.asarray(task.teaching).sum(1).tolist() == [1] * 512 and np.asarray(task.teaching)[:, -1].all()
    assert set(np.unique(targets)) == set(range(5))
    first = (inputs == 5).argmax(1)
    assert first.min() == 0 and first.max() == 27  # the whole range [0, T − 3]


def test_reverse_and_sort_pairs():
    pairs = tasks.reverse_pairs(3, 500, min_length=2, max_length=9, alphabet="xyz")
    assert all(target == source[::-1] and set(source) <= set("xyz") for source, target in pairs)
    assert {len(source) for source, _ in pairs} == set(range(2, 10))  # every length occurs
    assert pairs == tasks.reverse_pairs(3, 500, min_length=2, max_length=9, alphabet="xyz")  # seeded
    for source, target in tasks.sort_pairs(4, 200, max_length=30):
        assert source.isdigit() and list(target) == sorted(source) and 1 <= len(source) <= 30


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def _parse_date(text):
    """An independent reading of the three written forms."""
    if match := re.fullmatch(r"(\d{1,2}) ([A-Z][a-z]+) (\d{4})", text):
        day, month, year = int(match[1]), MONTHS.index(match[2]) + 1, int(match[3])
    elif match := re.fullmatch(r"([A-Z][a-z]+) (\d{1,2}), (\d{4})", text):
        day, month, year = int(match[2]), MONTHS.index(match[1]) + 1, int(match[3])
    else:
        match = re.fullmatch(r"(\d\d)/(\d\d)/(\d\d)", text)
        day, month, year = int(match[1]), int(match[2]), int(match[3])
        year += 1900 if year >= 50 else 2000
    return f"{year:04d}-{month:02d}-{day:02d}"


def test_date_pairs_normalise_every_format():
    pairs = tasks.date_pairs(5, 3000)
    assert all(_parse_date(source) == target for source, target in pairs)
    years = [int(target[:4]) for _, target in pairs]
    assert min(years) == 1950 and max(years) == 2049
    shapes = {"/" in s or ("," in s) * 2 for s, _ in pairs}
    assert shapes == {0, 1, 2}  # all three formats occur
    assert tasks.format_date(datetime.date(2021, 3, 3), "dd/mm/yy") == "03/03/21"
    assert tasks.format_date(datetime.date(2021, 3, 3), "d Month yyyy") == "3 March 2021"


@pytest.mark.parametrize("call, message", [
    (lambda: tasks.adding_problem(jax.random.key(0), 2, 1), "Expected length >= 2"),
    (lambda: tasks.temporal_order(jax.random.key(0), 2, 10), "Expected length >= 20"),
    (lambda: tasks.copy_memory(jax.random.key(0), 2, delay=0), "delay .* positive integer"),
    (lambda: tasks.recall_task(jax.random.key(0), 2, lag=5, length=4), "Expected lag <= length"),
    (lambda: tasks.reverse_pairs(0, 3, min_length=5, max_length=4), "Expected min_length <= max_length"),
    (lambda: tasks.sort_pairs(0, 0), "num .* positive integer"),
    (lambda: tasks.date_pairs(0, 3, first_year=1900, last_year=2049), "at most 100 years"),
    (lambda: tasks.date_pairs(0, 3, formats=("yyyy.mm.dd",)), "Expected date formats among"),
    (lambda: tasks.format_date(datetime.date(2021, 3, 3), "iso"), "Expected a date format in"),
    (lambda: tasks.selective_copying(jax.random.key(0), 2, 31, num_tokens=16), "Expected length >= 2·num_tokens = 32"),
    (lambda: tasks.selective_copying(jax.random.key(0), 2, 40, vocab_size=2), "Expected vocab_size >= 3"),
    (lambda: tasks.induction_heads(jax.random.key(0), 2, 2), "Expected vocab_size >= 2 and length >= 3"),
])
def test_bad_task_settings(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------- pathological problems (issue 17)


def _windows(fractions, length, low=1):
    """The step ranges of the M&S windows, written out independently: [⌊lo·T⌋, ⌊hi·T⌋), at least ``low``."""
    return [(max(low, round(lo * length * 1000) // 1000), round(hi * length * 1000) // 1000)
            for lo, hi in fractions]


@pytest.mark.parametrize("name", ["addition", "multiplication", "xor"])
@pytest.mark.parametrize("length", [30, 100])
def test_pathological_operations_follow_their_definition(name, length):
    task = tasks.pathological(name, jax.random.key(3), 2048, length)
    xs, targets, teaching = (np.asarray(a) for a in task)
    longest = int(1.1 * length + 1e-9)
    assert xs.shape == (2048, longest, 2) and targets.shape == (2048, longest, 1)
    ends = teaching.argmax(1) + 1  # each sequence's length
    assert (teaching.sum(1) == 1).all() and ends.min() == length and ends.max() == longest
    (a0, a1), (b0, b1) = _windows([(0.01, 0.1), (0.1, 0.5)], length)
    for row, end, target in zip(xs[:200], ends[:200], targets[:200, :, 0]):
        values, marks = row[:end, 0], row[:end, 1]
        assert (row[end:] == 0).all()  # padding
        ones = np.nonzero(marks == 1)[0]
        assert len(ones) == 2 and a0 <= ones[0] < a1 and b0 <= ones[1] < b1
        assert np.nonzero(marks == -1)[0].tolist() == [0, end - 4]
        a, b = values[ones]
        expected = {"addition": a + b, "multiplication": a * b, "xor": float(int(a) ^ int(b))}[name]
        assert target[end - 1] == pytest.approx(expected, rel=1e-6)
        if name == "xor":
            assert set(np.unique(values)) <= {0.0, 1.0}
        else:
            assert ((0 <= values) & (values < 1)).all()
    if name == "xor":
        assert targets[:, 0, 0].mean() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("name, windows", [
    ("temporal_order", [(0.01, 0.1), (0.4, 0.5)]),
    ("temporal_order_3bit", [(0.01, 0.1), (0.3, 0.4), (0.5, 0.6)]),
])
def test_pathological_temporal_order_follows_its_definition(name, windows):
    length = 50
    task = tasks.pathological(name, jax.random.key(4), 1024, length)
    xs, targets, teaching = (np.asarray(a) for a in task)
    assert xs.shape == (1024, 55, 8)
    ends = teaching.argmax(1) + 1
    assert ends.min() == 50 and ends.max() == 55
    bounds = _windows(windows, length)
    labels = []
    for row, end, target in zip(xs, ends, targets):
        assert (row[end:] == 0).all() and (row[:end].sum(-1) == 1).all()
        symbols = row[:end].argmax(-1)
        assert symbols[0] == 6 and symbols[-1] == 7 and (symbols[1:-1] <= 5).all()
        relevant = np.nonzero((symbols == 4) | (symbols == 5))[0]
        assert len(relevant) == len(windows)
        assert all(lo <= p < hi for p, (lo, hi) in zip(relevant, bounds))
        label = int("".join(str(symbols[p] - 4) for p in relevant), 2)  # first symbol most significant
        assert target[end - 1] == label
        labels.append(label)
    assert set(labels) == set(range(2 ** len(windows)))


def test_temporal_order_variable_lengths_and_three_symbols():
    task = tasks.temporal_order(jax.random.key(5), 64, 40, windows=((0.1, 0.2), (0.4, 0.5), (0.6, 0.7)),
                                max_length=44)
    teaching = np.asarray(task.teaching)
    ends = teaching.argmax(1) + 1
    assert task.xs.shape == (64, 44, 8) and (40 <= ends).all() and (ends <= 44).all()
    assert int(np.asarray(task.targets).max()) <= 7


def test_random_permutation_follows_its_definition():
    task = tasks.pathological("random_permutation", jax.random.key(6), 512, 30)
    symbols, targets = np.asarray(task.xs).argmax(-1), np.asarray(task.targets)
    assert task.xs.shape == (512, 30, 100) and np.asarray(task.teaching).all()
    assert set(np.unique(symbols[:, 0])) == {0, 1} and (symbols[:, 1:] >= 2).all()
    np.testing.assert_array_equal(targets[:, :-1], symbols[:, 1:])  # predict the next input
    np.testing.assert_array_equal(targets[:, -1], symbols[:, 0])  # then recall the first


def test_memorization_follows_its_definition():
    length, chars = 30, 5
    task = tasks.pathological("memorization", jax.random.key(7), 256, length)
    symbols, targets = np.asarray(task.xs).argmax(-1), np.asarray(task.targets)
    assert task.xs.shape == (256, 30, 4) and np.asarray(task.teaching).all()
    go, blank = 2, 3
    for row, target in zip(symbols, targets):
        expected_inputs = np.full(length, blank)
        expected_inputs[:chars] = row[:chars]
        expected_inputs[length - chars - 1] = go
        np.testing.assert_array_equal(row, expected_inputs)
        assert set(row[:chars]) <= {0, 1}
        np.testing.assert_array_equal(target, np.r_[np.full(length - chars, 2), row[:chars]])


def _perfect(name, task):
    kind, size = tasks.PATHOLOGICAL[name]
    if kind == "regression":
        return task.targets
    if kind == "binary":
        return np.where(np.asarray(task.targets) > 0.5, 3.0, -3.0)
    return np.asarray(jax.nn.one_hot(task.targets, size))


@pytest.mark.parametrize("name", list(tasks.PATHOLOGICAL))
def test_success_accepts_perfect_outputs_and_rejects_chance(name):
    task = tasks.pathological(name, jax.random.key(8), 200, 30)
    assert tasks.success(name, _perfect(name, task), task) == (0.0, True)
    kind, size = tasks.PATHOLOGICAL[name]
    zeros = np.zeros(task.teaching.shape + (size,), np.float32)
    if kind == "regression":
        zeros = zeros + np.asarray(task.targets).mean()  # the mean predictor
    result = tasks.success(name, zeros, task)
    assert not result.solved and result.error_rate > 0.3


def test_success_thresholds_fire_where_stated():
    task = tasks.pathological("addition", jax.random.key(9), 100, 30)
    targets = np.array(task.targets)
    near = targets + 0.039
    assert tasks.success("addition", near, task) == (0.0, True)
    off = near.copy()
    off[0] += 0.002  # one sequence out of 100 now off by 0.041 > 0.04: 1% wrong is not below 1%
    assert tasks.success("addition", off, task) == (0.01, False)
    assert tasks.success("addition", off, task, max_error_rate=0.02).solved
    # Outputs away from the scored step never count.
    elsewhere = np.where(np.asarray(task.teaching)[..., None], targets, 99.0)
    assert tasks.success("addition", elsewhere, task).solved
    # Temporal order: 3 of 200 wrong is 1.5%.
    order = tasks.pathological("temporal_order", jax.random.key(10), 200, 30)
    logits = np.array(jax.nn.one_hot(order.targets, 4))
    logits[:3] = np.roll(logits[:3], 1, axis=-1)
    assert tasks.success("temporal_order", logits, order).error_rate == pytest.approx(0.015)
    # Random permutation scores only the last step; memorisation only the recalled symbols.
    perm = tasks.pathological("random_permutation", jax.random.key(11), 50, 20)
    logits = np.zeros((50, 20, 100), np.float32)
    logits[:, -1] = np.asarray(jax.nn.one_hot(perm.targets[:, -1], 100))
    assert tasks.success("random_permutation", logits, perm).solved
    memo = tasks.pathological("memorization", jax.random.key(12), 50, 20)
    logits = np.array(jax.nn.one_hot(memo.targets, 3))
    logits[:, :-5] = 0.0  # blanks all wrong-or-tied, recalled symbols right
    logits[:, :-5, 0] = 1.0
    assert tasks.success("memorization", logits, memo).solved
    logits[0, -1] = np.roll(logits[0, -1], 1)  # one of 250 recalled symbols wrong: 0.4%
    assert tasks.success("memorization", logits, memo).error_rate == pytest.approx(1 / 250)


@pytest.mark.parametrize("call, message", [
    (lambda: tasks.pathological("parity", jax.random.key(0), 2, 30), "Expected a pathological problem"),
    (lambda: tasks.pathological("addition", jax.random.key(0), 2, 10), "Expected length >= 20"),
    (lambda: tasks.temporal_order(jax.random.key(0), 2, 30, windows=((0.5, 0.6), (0.1, 0.2))), "increasing"),
    (lambda: tasks.temporal_order(jax.random.key(0), 2, 30, max_length=20), "max_length >= length"),
    (lambda: tasks.memorization(jax.random.key(0), 2, 10), "length >= 2·num_chars"),
    (lambda: tasks.success("xor", np.zeros((2, 33, 2)), tasks.pathological("xor", jax.random.key(0), 2, 30)),
     "one unit"),
])
def test_bad_pathological_settings(call, message):
    with pytest.raises(ValueError, match=message):
        call()
