"""The seeds' "hello" example: a character RNN trained on "hello" predicts "ello" from "hell".

Vocabulary: the characters of "hello" (h, e, l, o) after recurrax's four special tokens.
Model: ``recurrax.char_lm`` with an Elman (tanh) layer of ``hidden_size`` units, trained with
``clip_by_global_norm`` + Adam on the one sequence "hello" (inputs h, e, l, l; targets e, l,
l, o). Checked afterwards: fed "hell", the most likely next characters are "ello"; sampled
greedily from "h", the model writes "hello". Needing "l" after "he" but "o" after "hell", the
model has to remember more than the current character.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import jax
import jax.numpy as jnp

import recurrax
from experiments import _style
from recurrax import char_lm
from recurrax.vocab import Vocabulary


@dataclasses.dataclass(frozen=True)
class Config:
    text: str = "hello"
    cell: str = "elman"
    hidden_size: int = 8
    embed_size: int = 4
    steps: int = 300
    learning_rate: float = 0.05
    seed: int = 0


QUICK = Config()  # already tiny: the whole study runs in seconds


def run(config: Config, out_dir: pathlib.Path) -> dict:
    vocab = Vocabulary.build([config.text], level="char")
    ids = jnp.asarray(vocab.encode(config.text), jnp.int32)[None]  # (1, T)
    params = char_lm.init_char_lm(jax.random.key(config.seed), len(vocab), [config.hidden_size],
                                  embed_size=config.embed_size, cell=config.cell)
    optimizer = recurrax.default_optimizer(config.learning_rate)
    train_step = recurrax.make_train_step(lambda p, batch, key: char_lm.loss(p, batch), optimizer)
    with jax.numpy_dtype_promotion("standard"):
        state = recurrax.init_train_state(params, optimizer, jax.random.key(config.seed + 1))
        first = float(char_lm.bits_per_char(params, ids))
        result = recurrax.fit(state, train_step, lambda step: ids, num_steps=config.steps, progress=False)
    params = result.state.params
    bits_curve = [r["loss"] / math.log(2) for r in result.history if "loss" in r]
    logits = char_lm.next_char_logits(params, ids[:, :-1])[0]  # after h, he, hel, hell
    predicted = vocab.decode(jnp.argmax(logits, -1))
    probabilities = jax.nn.softmax(logits, -1)
    sampled = config.text[0] + vocab.decode(char_lm.sample(params, ids[0, :1], len(config.text) - 1))
    results = {
        "vocabulary": list(vocab.tokens),
        "first_bits_per_char": first,
        "final_bits_per_char": float(char_lm.bits_per_char(params, ids)),
        "fed": config.text[:-1],
        "predicted": predicted,
        "probability_of_target": [float(probabilities[t, i]) for t, i in enumerate(ids[0, 1:].tolist())],
        "sampled_from_first_char": sampled,
        "train_bits_curve": bits_curve,
    }
    print(f"fed {results['fed']!r} -> predicted {predicted!r}; sampled from {config.text[0]!r}: {sampled!r}")
    print(f"bits/char {first:.3f} -> {results['final_bits_per_char']:.4f}; "
          f"p(target) per step {[round(p, 3) for p in results['probability_of_target']]}")
    (out_dir / "results.md").write_text(
        f"fed {results['fed']!r}, predicted {predicted!r}; sampled from {config.text[0]!r}: {sampled!r}\n"
    )
    _figure(results, config, out_dir / "hello.png")
    return results


def _figure(results: dict, config: Config, path: pathlib.Path) -> None:
    plt = _style.pyplot()
    fig, (loss_ax, prob_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    curve = results["train_bits_curve"]
    loss_ax.semilogy(range(1, len(curve) + 1), curve, label=f"{config.cell} RNN, {config.hidden_size} units")
    loss_ax.set(xlabel="training step", ylabel="loss (bits per character)",
                title=f"training on {config.text!r}")
    loss_ax.legend()
    text = config.text
    labels = [f"{text[: t + 1]} → {text[t + 1]}" for t in range(len(text) - 1)]
    bars = prob_ax.bar(labels, results["probability_of_target"], color=_style.COLORS[0])
    prob_ax.bar_label(bars, fmt="%.3f", fontsize=8)
    prob_ax.set_ylim(0, 1.1)
    prob_ax.set(xlabel="context → next character", ylabel="p(next character)",
                title=f"fed {results['fed']!r}: predicts {results['predicted']!r}")
    _style.save(fig, path)
