"""A tour of the seeds' claims: every study in a few minutes, one report page with every figure.

Each entry of ``ENTRIES`` names a study (``python -m experiments NAME``), the sentence of the
lecture notes (``seeds/``) that it tests, the overrides of the study's ``Config`` that show the
result in the tour's time (``tour``) and of its ``QUICK`` config for the test suite
(``quick``), how to read its key numbers and its verdict from the dict the study's ``run``
returns, and the figures it draws. The tour calls each study's own ``run`` with that config,
in ``out_dir/NAME`` (its ``results.json``, ``results.md``, figures and printed log), and writes:

- ``out_dir/index.html``: one self-contained page (figures embedded as PNG data URIs, no
  JavaScript, no network) with, per study, the claim, the expectation and whether it was met,
  the key numbers, the figures, the wall time and the command that runs the full study;
- ``out_dir/README.md``: the same for terminals and GitHub (figures linked beside it).

``--only hello,esn`` runs a subset. Adding a study to the tour is one ``Entry`` in ``ENTRIES``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import html
import importlib
import io
import json
import os
import pathlib
import platform
import shlex
import time
from collections.abc import Callable

import jax
import numpy as np

from experiments import EXPERIMENTS


@dataclasses.dataclass(frozen=True)
class Entry:
    """One study of the tour.

    Attributes:
      name: the study's name in ``experiments.EXPERIMENTS``; ``python -m experiments NAME`` runs
        it in full.
      title: the section heading.
      claim: one sentence of the seeds that the study tests, and ``source``, where it is.
      expectation: what the tour checks, in words (the numbers that ``verdict`` compares).
      tour: overrides of the study's ``Config()`` for the tour (a few tens of seconds each).
      quick: overrides of the study's ``QUICK`` config for ``tour --quick`` (the test suite).
      quick_expectation: what ``--quick`` runs and checks, written for that size.
      quick_verdict: ``results -> bool`` at the quick size, or ``None`` where that size cannot
        show the effect: the verdict then says "not measured at this size".
      numbers: ``results -> [(quantity, value), ...]``, the key numbers of the study's results.
      verdict: ``results -> bool``, whether the expectation was met.
      figures: the files the study draws in its output folder, shown in this order.
      full_time: the full study's wall time on the 2-core development machine (docs/results/).
    """

    name: str
    title: str
    claim: str
    source: str
    expectation: str
    tour: dict
    quick: dict
    numbers: Callable[[dict], list]
    verdict: Callable[[dict], bool]
    figures: tuple
    full_time: str
    quick_expectation: str
    quick_verdict: Callable[[dict], bool] | None


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


# ---------------------------------------------------------------------------------------------
# Reading each study's results.


def _hello_numbers(r: dict) -> list:
    return [
        (f"fed {r['fed']!r}, most likely next characters", repr(r["predicted"])),
        ("sampled greedily from the first character", repr(r["sampled_from_first_char"])),
        ("loss before → after training (bits per character)",
         f"{r['first_bits_per_char']:.3f} → {r['final_bits_per_char']:.4f}"),
        ("lowest p(correct next character)", f"{min(r['probability_of_target']):.3f}"),
    ]


def _hello_verdict(r: dict) -> bool:
    return r["predicted"] == "ello" and r["sampled_from_first_char"] == "hello"


def _vanishing_numbers(r: dict) -> list:
    rows = []
    for activation, entry in r["elman"].items():
        worst = max(row["max_norm_over_bound"] for row in entry["rows"])
        below = [row["fitted_rate"] for row in entry["rows"] if row["lambda1_gamma"] < 1 - 1e-6]
        crossover = entry["crossover_lambda1_gamma"]
        rows.append((f"Elman {activation}: max ‖∂h_T/∂h_k‖₂ / (σ₁γ)^lag", f"{worst:.3f}"))
        rows.append((f"Elman {activation}: fitted log-rate per step at λ₁γ < 1 (all < 0?)",
                     ", ".join(f"{v:+.3f}" for v in below)))
        rows.append((f"Elman {activation}: λ₁γ where decay turns to growth",
                     "none in the sweep" if crossover is None else f"{crossover:.2f}"))
    for family in ("lstm", "gru"):
        if f"{family} init" in r["gated"]:
            rows.append((f"{family.upper()} fitted log-rate per step, init → trained",
                         (f"{r['gated'][f'{family} init']['fitted_rate']:+.3f} → "
                         f"{r['gated'][f'{family} trained']['fitted_rate']:+.3f}")))
    return rows


def _vanishing_verdict(r: dict) -> bool:
    return all(e["bound_respected"] and e["decays_below_one"] for e in r["elman"].values())


def _clipping_numbers(r: dict) -> list:
    rows = [("λ₁γ at initialisation", f"{r['lambda1_gamma']:.2f}")]
    for name, run in r["runs"].items():
        outcome = f"stopped at step {run['steps_done'] + 1} (non-finite)" if run["stopped"] else \
            f"{run['steps_done']} steps"
        rows.append((f"{name}: steps, max gradient norm, final test MSE",
                     f"{outcome}, {_fmt(run['max_grad_norm'])}, {_fmt(run['final_test_mse'], 4)}"))
    return rows


def _clipping_verdict(r: dict) -> bool:
    runs = r["runs"]
    clipped = [run for name, run in runs.items() if name != "no clipping"]
    return (bool(runs["no clipping"]["stopped"]) and all(run["stopped"] is None for run in clipped)
            and runs["clip 1"]["final_test_mse"] < 1 / 6)


def _clipping_quick_verdict(r: dict) -> bool:
    runs = r["runs"]
    plain = runs["no clipping"]
    exploded = bool(plain["stopped"]) or (plain["max_grad_norm"] > 1e4 and plain["final_test_mse"] > 1e3)
    clipped = [run for name, run in runs.items() if name != "no clipping"]
    return exploded and all(run["stopped"] is None and run["final_test_mse"] < 1 for run in clipped)


def _tbptt_split(r: dict) -> tuple[list, list]:
    """The settings whose window is shorter than the lag, and the others (full BPTT included)."""
    short = [row for row in r["settings"].values() if row["k2"] is not None and row["k2"] < r["lag"]]
    long = [row for row in r["settings"].values() if row["k2"] is None or row["k2"] >= r["lag"]]
    return short, long


def _tbptt_numbers(r: dict) -> list:
    rows = [("lag L of the dependency; chance accuracy", f"{r['lag']}; {r['chance']:.3f}")]
    for name, row in r["settings"].items():
        steps = ", ".join("never" if s is None else str(s) for s in row["steps_to_99"])
        rows.append((f"{name}: final accuracy; steps to 99%",
                     f"{np.mean(row['final_accuracy']):.3f}; {steps}"))
        rows.append((f"{name}: cosine with the full gradient at init (LSTM params)",
                     f"{row['cosine_at_init']['lstm']:.3f}"))
    return rows


def _tbptt_verdict(r: dict) -> bool:
    short, long = _tbptt_split(r)
    return (all(max(row["final_accuracy"]) < 0.5 for row in short)
            and all(min(row["final_accuracy"]) >= 0.99 for row in long))


def _long_range_rows(r: dict, task: str) -> dict:
    return {row["cell"]: row for row in r["rows"] if row["task"] == task}


def _long_range_numbers(r: dict) -> list:
    rows = _long_range_rows(r, "adding")
    out = [("mean predictor's test MSE (baseline)", f"{next(iter(rows.values()))['baseline']:.3f}")]
    out += [(f"{cell}: test MSE", f"{row['metric']:.4f}") for cell, row in rows.items()]
    return out


def _long_range_verdict(r: dict) -> bool:
    rows = _long_range_rows(r, "adding")
    return (rows["tanh RNN"]["metric"] > 0.1
            and all(rows[cell]["metric"] < 0.05 for cell in ("LSTM", "GRU") if cell in rows))


def _seq2seq_rows(r: dict) -> dict:
    return {row["attention"]: row for row in r["rows"] if row["task"] == "reverse"}


def _long_bucket(row: dict) -> tuple[str, float]:
    """The bucket of the longest sources and its exact match."""
    name = list(row["buckets"])[-1]
    return name, row["buckets"][name][0]


def _seq2seq_numbers(r: dict) -> list:
    out = []
    for attention, row in _seq2seq_rows(r).items():
        buckets = ", ".join(f"{k}: {acc:.2f}" for k, (acc, _) in row["buckets"].items())
        out.append((f"attention {attention}: exact match (all test pairs)", f"{row['exact_match']:.3f}"))
        out.append((f"attention {attention}: exact match by source length", buckets))
    return out


def _seq2seq_verdict(r: dict) -> bool:
    rows = _seq2seq_rows(r)
    plain = [row for name, row in rows.items() if name == "none"]
    attended = [row for name, row in rows.items() if name != "none"]
    return (bool(plain and attended) and _long_bucket(plain[0])[1] < 0.2
            and _long_bucket(attended[0])[1] >= 0.8)


def _esn_default(r: dict) -> dict:
    return r["accuracy"]["recurrax readout [u, x]"]


def _esn_numbers(r: dict) -> list:
    out = []
    for name, entry in r["accuracy"].items():
        rmse = entry["rmse"]
        out.append((f"{name}: test RMSE, median [min, max] over {len(rmse['values'])} reservoirs",
                     f"{rmse['median']:.5f} [{rmse['min']:.5f}, {rmse['max']:.5f}]"))
    out.append(("default readout: R², median", f"{_esn_default(r)['r2']['median']:.6f}"))
    run = r["free_running"]
    out.append(("free running (outputs fed back): steps with |error| ≤ 0.05",
                f"{run['steps_within_0.05']} of {run['steps']}"))
    return out


def _esn_verdict(r: dict) -> bool:
    default = _esn_default(r)
    return default["rmse"]["median"] <= 0.0020 and default["r2"]["median"] > 0.999


def _esn_quick_verdict(r: dict) -> bool:
    default = _esn_default(r)
    return default["rmse"]["median"] <= 0.01 and default["r2"]["median"] > 0.998


def _ntm_numbers(r: dict) -> list:
    out = []
    for row in r["rows"]:
        errors = ", ".join(f"L={n}: {v:.2f}" for n, v in row["bit_errors"].items())
        out.append((f"{row['model']} ({row['parameters']:,} parameters): bit errors per sequence", errors))
    out += [(check["expectation"], check["numbers"]) for check in r["expectations"]]
    return out


def _ntm_verdict(r: dict) -> bool:
    return all(check["met"] for check in r["expectations"])


def _parallel_numbers(r: dict) -> list:
    out = []
    for row in r["rows"]:
        if row.get("skipped"):
            continue
        its = f", {row['iterations']} iterations" if row["iterations"] else ""
        out.append((f"{row['method']} ({row['cell']}), H={row['H']}, T={row['T']}: speed-up over lax.scan "
                    f"on this CPU, forward / forward+backward{its}",
                    f"{row['forward']['speedup']:.2f}× / {row['forward+backward']['speedup']:.2f}×"))
        out.append(("  predicted forward speed-up on an accelerator (model: 5 µs launches)",
                    f"{row['predicted']['speedup']:.1f}×"))
    t = r["training"]
    out.append((f"GRU training at T = {t['T']:,}: max |Δloss| {t['method']} vs scan",
                f"{t['max_abs_loss_difference']:.1e}"))
    return out


def _parallel_verdict(r: dict) -> bool:
    rows = [row for row in r["rows"] if not row.get("skipped")]
    exact = all(row["converged"] and row["output_deviation"] < 1e-4 and row["gradient_deviation_relative"] < 1e-4
                for row in rows)
    return exact and r["training"]["max_abs_loss_difference"] < 1e-3


def _parallel_crossover_verdict(r: dict) -> bool:
    """The full tour's claim: exact, slower forward here, and the model's crossover within the lengths."""
    rows = [row for row in r["rows"] if not row.get("skipped")]
    crossing = True
    for method in {row["method"] for row in rows}:
        predicted = [row["predicted"]["speedup"] for row in sorted(
            (row for row in rows if row["method"] == method), key=lambda row: row["T"])]
        crossing &= predicted == sorted(predicted) and predicted[-1] > 1
    return _parallel_verdict(r) and crossing and all(row["forward"]["speedup"] < 1 for row in rows)


def _modern_rows(r: dict) -> dict:
    return {(row["task"], row["model"]): row for row in r["summary"]}


def _modern_numbers(r: dict) -> list:
    return [(f"{row['task'].replace('_', ' ')}: {row['model']} ({row['params']:,} parameters), held-out "
             f"accuracy per seed", ", ".join(f"{a:.3f}" for a in row["accuracies"]) + f" (chance {row['chance']:.3f})")
            for row in r["summary"]]


def _modern_verdict(r: dict) -> bool:
    rows = _modern_rows(r)
    return (min(rows[("temporal_order", "mLSTM")]["accuracies"]) >= 0.9
            and max(rows[("temporal_order", "LSTM")]["accuracies"]) < 0.4)


# ---------------------------------------------------------------------------------------------
# The registry. Claims are quoted (lightly trimmed) from the lecture notes in seeds/.

ENTRIES: tuple[Entry, ...] = (
    Entry(
        name="hello",
        title="The “hello” character model",
        claim="A character-level language model over the vocabulary [h, e, l, o] is trained on the "
              "sequence “hello”; at test time it samples characters one at a time and feeds them "
              "back to the model.",
        source="seeds/001 (Elman RNN, character-level language model example)",
        expectation="Fed “hell”, the trained Elman RNN (8 units) predicts “ello”; sampled greedily "
                    "from “h”, it writes “hello”.",
        tour={},
        quick={"steps": 30},
        numbers=_hello_numbers,
        verdict=_hello_verdict,
        figures=("hello.png",),
        full_time="9 s",
        quick_expectation="Fed “hell”, the Elman RNN (8 units) trained for 30 steps predicts “ello”; sampled greedily "
                          "from “h”, it writes “hello”.",
        quick_verdict=_hello_verdict,
    ),
    Entry(
        name="vanishing",
        title="Vanishing and exploding gradients against the λ₁γ bound",
        claim="With λ₁ the largest |eigenvalue| of W_rec and ‖diag f′‖ ≤ γ, each step's Jacobian "
              "has norm at most λ₁γ, so ‖∂s_t/∂s_k‖ ≤ (λ₁γ)^(t−k): λ₁γ < 1 is sufficient for "
              "vanishing gradients and λ₁γ > 1 necessary for exploding ones (Bengio et al. 1994, "
              "Pascanu et al. 2013).",
        source="seeds/002 (Vanishing and Exploding Gradient – WHY)",
        expectation="For Elman RNNs with tanh, sigmoid and ReLU, the measured ‖∂h_T/∂h_k‖₂ never "
                    "exceeds (σ₁γ)^lag (ratio ≤ 1), and every setting with λ₁γ < 1 vanishes "
                    "(fitted log-rate per step < 0).",
        tour={"gated": (), "cost_size": 0},
        quick={"activations": ("tanh",), "rates": (0.5, 2.0), "length": 8, "num_sequences": 1,
               "gated": (), "cost_size": 0},
        numbers=_vanishing_numbers,
        verdict=_vanishing_verdict,
        figures=("vanishing.png",),
        full_time="1 min",
        quick_expectation="For an Elman RNN with tanh at λ₁γ = 0.5 and 2 (one sequence of T = 8), the measured "
                          "‖∂h_T/∂h_k‖₂ never exceeds (σ₁γ)^lag, and λ₁γ = 0.5 vanishes (fitted log-rate per step < 0).",
        quick_verdict=_vanishing_verdict,
    ),
    Entry(
        name="clipping",
        title="Gradient clipping tames an explosion",
        claim="Gradient clipping rescales the gradient whenever its norm exceeds a threshold "
              "(usually between 1 and 5): a simple, effective remedy for exploding gradients "
              "(Pascanu et al. 2013).",
        source="seeds/002 (Gradient Clipping); seeds/000: “If you have big gradients, remember to clip them”",
        expectation="A tanh RNN at λ₁γ = 3 trained with SGD + momentum on the adding problem: "
                    "without clipping the loss becomes infinite and training stops; clipped runs "
                    "stay finite, and clipping at 1 ends below the mean predictor's MSE (1/6).",
        tour={"steps": 500, "thresholds": (1.0, 5.0), "track_every": 25, "eval_size": 1024},
        quick={"steps": 30, "track_every": 10, "eval_size": 64},
        numbers=_clipping_numbers,
        verdict=_clipping_verdict,
        figures=("clipping.png",),
        full_time="20 s",
        quick_expectation="A tanh RNN at λ₁γ = 3 (32 units, adding problem at T = 10, 30 steps of SGD + momentum): "
                          "without clipping the gradient norm passes 10⁴ and the test MSE 10³ (or the loss becomes "
                          "infinite); clipped at 1 the run stays finite with a test MSE below 1.",
        quick_verdict=_clipping_quick_verdict,
    ),
    Entry(
        name="truncated_vs_full",
        title="Truncated vs full BPTT on a dependency of known lag",
        claim="The unrolling could go on until the beginning of time, or it can be truncated, so "
              "we have to decide in advance the size of the memory of the unrolled RNN.",
        source="seeds/004 (What is Backprop Through Time in RNNs?)",
        expectation="The last step must name the symbol flagged L = 16 steps earlier: TBPTT "
                    "windows k2 < L stay near chance (< 0.5), k2 ≥ L and full BPTT reach ≥ 99%.",
        tour={"steps": 750, "seeds": (0,), "k2_fractions": (0.5, 1.0), "eval_size": 512},
        quick={"steps": 20, "eval_every": 10, "k2_fractions": (0.25,), "eval_size": 64},
        numbers=_tbptt_numbers,
        verdict=_tbptt_verdict,
        figures=("truncated_vs_full.png",),
        full_time="8 min",
        quick_expectation="Lag L = 4 in sequences of 12, TBPTT with k2 = 1 and full BPTT, 20 updates: too few for "
                          "either to learn the dependency, so not measured at this size.",
        quick_verdict=None,
    ),
    Entry(
        name="long_range",
        title="Gated cells against the tanh RNN on a long-range task",
        claim="By adding gates to an RNN we can prevent the vanishing/exploding gradient problem: "
              "trained LSTMs/GRUs retain state information longer and handle long-distance "
              "dependencies.",
        source="seeds/001 (Summary: gated RNNs)",
        expectation="On the adding problem at T = 100 (same budget, optimiser and batches), the "
                    "gated cells (here the GRU; the full study adds the LSTM and five more) reach a "
                    "test MSE below 0.05 while the tanh RNN stays near the mean predictor's 0.167 "
                    "(> 0.1).",
        tour={"tasks": ("adding",), "cells": ("tanh RNN", "GRU"), "steps": 400, "eval_size": 256},
        quick={"tasks": ("adding",), "cells": ("tanh RNN", "LSTM"), "steps": 5},
        numbers=_long_range_numbers,
        verdict=_long_range_verdict,
        figures=("long_range.png",),
        full_time="15 min",
        quick_expectation="The tanh RNN and the LSTM on the adding problem at T = 10, 5 updates: too few to separate "
                          "them, so not measured at this size.",
        quick_verdict=None,
    ),
    Entry(
        name="seq2seq",
        title="The seq2seq bottleneck, and attention",
        claim="The encoder compresses the input sequence into a context vector used by the "
              "decoder; with long sequences this encoding acts as a bottleneck, and attention "
              "over the encoder's states is required for long sequences.",
        source="seeds/004 (Seq2Seq; How is attention used in seq2seq?)",
        expectation="Reversing strings: without attention, exact match on the longest sources "
                    "falls below 20%; with additive attention it stays at 80% or more.",
        tour={"tasks": ("reverse",), "max_length": 15, "steps": 700, "test_size": 300},
        quick={"tasks": ("reverse",), "steps": 5, "train_size": 100, "test_size": 16},
        numbers=_seq2seq_numbers,
        verdict=_seq2seq_verdict,
        figures=("exact_match_by_length.png", "attention.png"),
        full_time="8 min",
        quick_expectation="Reversing strings of up to 6 characters with additive attention, 5 updates on 100 pairs: "
                          "too few to learn the task, so not measured at this size.",
        quick_verdict=None,
    ),
    Entry(
        name="esn",
        title="An echo state network on Mackey–Glass",
        claim="Echo state networks use a sparsely connected, large, untrained network to keep "
              "track of the inputs for a long time, and a trained readout converts the echo into "
              "something usable.",
        source="seeds/000 (Mitigating training problems in RNNs)",
        expectation="With only the ridge readout trained (100 units, reservoirpy's README "
                    "setting), the one-step forecast of Mackey–Glass reaches a median test RMSE "
                    "≤ 0.0020 and R² > 0.999 over reservoir seeds.",
        tour={"num_seeds": 8, "sweep_radii": (0.8, 1.25), "sweep_leaks": (0.3, 1.0),
              "sweep_ridges": (1e-8, 1e-5), "sweep_keys": 2, "timing_hidden_size": 100,
              "timing_steps": 1999, "timing_repeats": 1, "timing_topologies": ("random",),
              "reservoirpy": False},
        quick={"reservoirpy": False, "num_seeds": 1, "timing_topologies": ("random",)},
        numbers=_esn_numbers,
        verdict=_esn_verdict,
        figures=("esn_forecast.png", "esn_sweep.png"),
        full_time="1 min",
        quick_expectation="With only the ridge readout trained (30 units, 600 steps of Mackey–Glass, one reservoir), "
                          "the one-step forecast reaches a test RMSE ≤ 0.01 and R² > 0.998.",
        quick_verdict=_esn_quick_verdict,
    ),
    Entry(
        name="ntm",
        title="The Neural Turing Machine's copy generalisation",
        claim="A Neural Turing Machine couples a controller network with an external memory "
              "matrix that it writes and reads through differentiable (attention) weightings, "
              "so it can store and retrieve information like RAM.",
        source="seeds/004 (Neural Turing Machines)",
        expectation="Copying random 8-bit vectors, with training lengths shorter than the test "
                    "lengths: the NTM copies within its training lengths with < 1 bit error and "
                    "generalises to longer sequences with at most a quarter of a "
                    "parameter-matched LSTM's errors, while the LSTM gets > 5% of the bits wrong.",
        tour={"hidden_size": 32, "memory_size": 32, "memory_width": 8, "batch_size": 16,
              "steps": 1500, "learning_rate": 5e-3, "max_length": 5, "test_lengths": (5, 8, 10),
              "trained_length": 5, "generalisation_lengths": (8, 10), "eval_every": 250,
              "eval_size": 32, "figure_length": 10},
        quick={"steps": 3, "test_lengths": (4, 6), "trained_length": 4, "generalisation_lengths": (6,),
               "eval_every": 3},
        numbers=_ntm_numbers,
        verdict=_ntm_verdict,
        figures=("ntm_learning.png", "ntm_weightings.png"),
        full_time="12 min",
        quick_expectation="The NTM and a parameter-matched LSTM copying 6-bit vectors (lengths 1–4), 3 updates each: "
                          "too few to learn to copy, so not measured at this size.",
        quick_verdict=None,
    ),
    Entry(
        name="modern",
        title="A 1997 LSTM and a 2024 xLSTM on the same long-range task",
        claim="Exponential gating with a stabiliser, and a matrix memory updated by a covariance rule, "
              "let an LSTM-style cell revise its storage decisions and store more: the mLSTM.",
        source="issue 29 (Beck et al. 2024, xLSTM), beyond the seeds",
        expectation="On temporal order at T = 200 (the order of two marked symbols among distractors, "
                    "classified at the last step; chance 0.25), at matched parameter counts (about "
                    "10,000, embedding and readout included) and the same 200 updates of 16 "
                    "sequences, both mLSTM seeds reach a held-out accuracy ≥ 0.9 while both LSTM "
                    "seeds stay below 0.4. The full study runs seven models on four tasks at "
                    "T = 256 and T = 1000.",
        tour={"tasks": ("temporal_order",), "models": ("LSTM", "mLSTM"), "long_length": 200, "steps": 200,
              "eval_size": 256},
        quick={"tasks": ("temporal_order",), "models": ("LSTM", "mLSTM")},
        numbers=_modern_numbers,
        verdict=_modern_verdict,
        figures=("modern.png",),
        full_time="55 min",
        quick_expectation="The LSTM and the mLSTM (about 1,500 parameters each) on temporal order at T = 24, "
                          "3 updates of 8: too few to learn it, so not measured at this size.",
        quick_verdict=None,
    ),
    Entry(
        name="parallel_in_time",
        title="Parallel in time: associative scans and Newton (DEER, quasi-DEER, ELK)",
        claim="An RNN's forward pass is T dependent steps; a recurrence linear in its state is an "
              "associative scan (log T depth), and a nonlinear one's whole trajectory is the root "
              "of a system that Newton's method solves with one such scan per iteration.",
        source="issue 20 (Blelloch 1990; Lim et al. 2024; Gonzalez et al. 2024), beyond the seeds",
        expectation="Every method reaches the sequential trajectory (outputs and gradients within "
                    "1e-4) and an ELK-trained GRU follows the scan's loss curve (max |Δloss| < 1e-3). "
                    "At H = 1 and T = 10², 10³, 10⁴ on this 2-core CPU every forward pass is slower "
                    "than the scan's (speed-up < 1), while the accelerator model's forward speed-up "
                    "(dotted) rises with T and exceeds 1 by T = 10⁴ for every method: the crossover "
                    "the figure shows.",
        tour={"lengths": (100, 1000, 10_000), "hidden_sizes": (1,), "long_length": 0, "long_hidden_sizes": (),
              "methods": ("associative", "quasi_deer", "elk"), "repeats": 3, "train_length": 2000,
              "train_steps": 15},
        quick={},
        numbers=_parallel_numbers,
        verdict=_parallel_crossover_verdict,
        figures=("parallel_in_time_speedup.png", "parallel_in_time_training.png"),
        full_time="11 min",
        quick_expectation="The associative scan (minGRU) and quasi-DEER (GRU) at H = 2, T = 30, B = 16 reach the "
                          "sequential trajectory (outputs and gradients within 1e-4), and a GRU (2 units) trained "
                          "3 steps with quasi-DEER follows the scan's loss curve (max |Δloss| < 1e-3).",
        quick_verdict=_parallel_verdict,
    ),
)


@dataclasses.dataclass(frozen=True)
class Config:
    quick: bool = False  # every study at its QUICK config (the test suite), with expectations for that size
    only: tuple = ()  # entry names to run (default all), e.g. --only hello,esn


QUICK = Config(quick=True)


def study_config(entry: Entry, quick: bool):
    """The study's config for the tour: its ``Config()`` (or ``QUICK``) with the entry's overrides."""
    module = importlib.import_module(EXPERIMENTS[entry.name])
    base = module.QUICK if quick else module.Config()
    return module, dataclasses.replace(base, **(entry.quick if quick else entry.tour))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def run_entry(entry: Entry, quick: bool, out_dir: pathlib.Path) -> dict:
    """Run one study at its tour config in ``out_dir/NAME``; its log goes to ``log.txt`` there."""
    module, config = study_config(entry, quick)
    study_dir = out_dir / entry.name
    study_dir.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    start, cpu_start = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(log), jax.numpy_dtype_promotion("standard"):
        results = module.run(config, study_dir)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    (study_dir / "log.txt").write_text(log.getvalue())
    with open(study_dir / "results.json", "w") as f:
        json.dump({"config": dataclasses.asdict(config), "results": results}, f, indent=2,
                  default=_json_default)
    missing = [name for name in entry.figures if not (study_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"Expected the {entry.name} study to draw {missing} in {study_dir}.")
    verdict = entry.quick_verdict if quick else entry.verdict
    return {"name": entry.name, "seconds": seconds, "cpu_seconds": cpu_seconds, "quick": quick,
            "overrides": entry.quick if quick else entry.tour,
            "expectation": entry.quick_expectation if quick else entry.expectation,
            "numbers": [(str(k), str(v)) for k, v in entry.numbers(results)],
            "met": None if verdict is None else bool(verdict(results)), "figures": list(entry.figures)}


NOT_MEASURED = "not measured at this size"


def _verdict_word(row: dict) -> str:
    return NOT_MEASURED if row["met"] is None else ("MET" if row["met"] else "NOT MET")


def _command(entry: Entry) -> str:
    return f"python -m experiments {entry.name}"


def _overrides(row: dict) -> str:
    """The tour's config as shell-quoted command-line options (the study's CLI parses them back)."""
    parts = ["--quick"] if row["quick"] else []
    for key, value in row["overrides"].items():
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        parts.append(f"--{key} {shlex.quote(str(value))}")  # a shell command: "tanh RNN", '' for ()
    return " ".join(parts)


def _tour_command(entry: Entry, row: dict) -> str:
    """The command that reruns the study at the tour's config."""
    return f"{_command(entry)} {_overrides(row)}".strip()


def _machine() -> str:
    """The machine and how busy it was (other processes' load inflates the wall times)."""
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (load average "
            f"{os.getloadavg()[1]:.1f} over the last 5 minutes), jax {jax.__version__} on "
            f"{jax.default_backend()}, Python {platform.python_version()}")


def _png_data_uri(path: pathlib.Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2.2em; border-bottom: 1px solid #ddd; }
blockquote { margin: 0.8em 0; padding: 0.4em 1em; border-left: 4px solid #0072B2; background: #f5f8fb; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.met { color: #fff; background: #1a7f37; padding: 0.1em 0.5em; border-radius: 3px; }
.missed { color: #fff; background: #b3261e; padding: 0.1em 0.5em; border-radius: 3px; }
.unmeasured { color: #222; background: #e4e4e4; padding: 0.1em 0.5em; border-radius: 3px; }
.note { color: #555; font-size: 0.92em; }
"""


def _badge(row: dict) -> str:
    word = _verdict_word(row)
    kind = {"MET": "met", "NOT MET": "missed"}.get(word, "unmeasured")
    return f'<span class="{kind}">{word}</span>'


_QUICK_NOTE = ("every study at its test configuration; each expectation is written for the size that "
               "ran, and is either checked there or marked “not measured at this size” where that size "
               "cannot show the effect. The full tour (without --quick) checks the claims.")


def render_html(rows: list, entries: dict, total: float, quick: bool) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>recurrax: a tour of the seeds' claims</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>recurrax: a tour of the seeds' claims</h1>",
           (f'<p class="note">{len(rows)} studies in {total:.0f} s on {e(_machine())}. '
           "Each study ran its own code (<code>experiments/NAME.py</code>) with a smaller config "
           "than its full run; the command under each section reruns it in full.</p>")]
    if quick:
        out.append(f'<p class="note"><b>Made with <code>--quick</code>:</b> {e(_QUICK_NOTE)}</p>')
    out += ["<table><tr><th>study</th><th>expectation</th><th>wall time</th><th>full study</th></tr>"]
    for row in rows:
        entry = entries[row["name"]]
        out.append(f'<tr><td><a href="#{e(entry.name)}">{e(entry.title)}</a></td><td>{_badge(row)}</td>'
                   f"<td>{row['seconds']:.0f} s</td><td><code>{e(_command(entry))}</code> ({e(entry.full_time)})</td></tr>")
    out.append("</table>")
    for row in rows:
        entry = entries[row["name"]]
        out += [f'<h2 id="{e(entry.name)}">{e(entry.title)}</h2>',
                f"<blockquote>{e(entry.claim)}<br><span class=\"note\">— {e(entry.source)}</span></blockquote>",
                f"<p><b>Expectation:</b> {e(row['expectation'])} {_badge(row)}</p>"]
        out.append("<table><tr><th>quantity</th><th>value</th></tr>")
        out += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in row["numbers"]]
        out.append("</table>")
        study_dir_name = entry.name
        for name in row["figures"]:
            out.append(f'<img src="{_png_data_uri(row["dir"] / name)}" alt="{e(study_dir_name)}: {e(name)}">')
        out.append(f"<p class=\"note\">Wall time {row['seconds']:.1f} s (compilation included; CPU time "
                   f"{row['cpu_seconds']:.1f} s). Tour config: "
                   f"<code>{e(_tour_command(entry, row))}</code>. Full study "
                   f"({e(entry.full_time)}):</p><pre>{e(_command(entry))}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: list, entries: dict, total: float, quick: bool) -> str:
    out = ["# recurrax: a tour of the seeds' claims", "",
           (f"{len(rows)} studies in {total:.0f} s on {_machine()}. Each study ran its own code "
           "(`experiments/NAME.py`) with a smaller config than its full run; the command under each "
           "section reruns it in full. `index.html` beside this file is the same page with the "
           "figures embedded."), ""]
    if quick:
        out += [f"**Made with `--quick`:** {_QUICK_NOTE}", ""]
    out += ["| study | expectation | wall time | full study |", "|---|---|---|---|"]
    for row in rows:
        entry = entries[row["name"]]
        out.append(f"| {_md_cell(entry.title)} | **{_verdict_word(row)}** | {row['seconds']:.0f} s "
                   f"| `{_command(entry)}` ({entry.full_time}) |")
    for row in rows:
        entry = entries[row["name"]]
        out += ["", f"## {entry.title}", "", f"> {entry.claim}", ">", f"> — {entry.source}", "",
                f"**Expectation:** {row['expectation']} **{_verdict_word(row)}**", ""]
        out += ["| quantity | value |", "|---|---|"]
        out += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in row["numbers"]]
        out.append("")
        for name in row["figures"]:
            out += [f"![{entry.name}: {name}]({entry.name}/{name})", ""]
        out += [(f"Wall time {row['seconds']:.1f} s (compilation included; CPU time {row['cpu_seconds']:.1f} s). "
                 "Tour config: "
                f"`{_tour_command(entry, row)}`. Full study ({entry.full_time}):"), "",
                "```bash", _command(entry), "```"]
    return "\n".join(out) + "\n"


def summary(rows: list, entries: dict, total: float) -> str:
    """The terminal summary: one line per study, then the total."""
    width = max(len(row["name"]) for row in rows)
    lines = [f"{'study':<{width}}  {'expectation':<25}  {'wall s':>6}  {'CPU s':>6}  full study"]
    for row in rows:
        lines.append(f"{row['name']:<{width}}  {_verdict_word(row):<25}  {row['seconds']:6.1f}  "
                     f"{row['cpu_seconds']:6.1f}  "
                     f"{_command(entries[row['name']])} ({entries[row['name']].full_time})")
    met = sum(1 for row in rows if row["met"])
    unmeasured = sum(1 for row in rows if row["met"] is None)
    judged = f" ({unmeasured} {NOT_MEASURED})" if unmeasured else ""
    lines.append(f"{met} of {len(rows)} expectations met{judged} in {total:.0f} s")
    return "\n".join(lines)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    from tqdm.auto import tqdm

    entries = {entry.name: entry for entry in ENTRIES}
    unknown = [name for name in config.only if name not in entries]
    if unknown:
        raise ValueError(f"Expected --only among {tuple(entries)}, got {unknown}.")
    chosen = [entry for entry in ENTRIES if not config.only or entry.name in config.only]
    out_dir = pathlib.Path(out_dir)
    rows = []
    start = time.perf_counter()
    bar = tqdm(chosen, desc="tour", unit="study")
    for entry in bar:
        bar.set_postfix_str(entry.name)
        row = run_entry(entry, config.quick, out_dir)
        row["dir"] = out_dir / entry.name
        rows.append(row)
        bar.write(f"{entry.name}: {_verdict_word(row)} ({row['seconds']:.0f} s)")
    bar.close()
    total = time.perf_counter() - start
    (out_dir / "index.html").write_text(render_html(rows, entries, total, config.quick), encoding="utf-8")
    (out_dir / "README.md").write_text(render_markdown(rows, entries, total, config.quick), encoding="utf-8")
    print(summary(rows, entries, total))
    print(f"page: {out_dir / 'index.html'} (and {out_dir / 'README.md'})")
    return {"total_seconds": total,
            "studies": [{k: v for k, v in row.items() if k != "dir"} for row in rows]}
