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
])
def test_bad_task_settings(call, message):
    with pytest.raises(ValueError, match=message):
        call()
