#!/usr/bin/env bash
# The order in which the paper-scale study (issue 30) was run into this directory, one process's
# share: `bash experiments/mitigations_paper_runs/queue.sh` from the repository root, twice side
# by side on a 2-core machine (each process takes the runs the other has not claimed; a run killed
# midway resumes from its last checkpoint, 5 HF updates at most lost). The kept runs are committed,
# so the study goes on across machines from where the last one stopped. Before committing, stop both
# processes: one stopped between writing a checkpoint and appending its progress record leaves a
# checkpoint with no record, whose step directory is to be deleted (the run then resumes from the
# one before; tests/test_mitigations.py checks that the committed records end at the checkpoints).
#
# Seed by seed, every problem first gets 200 HF updates, then the unsolved runs are extended to the
# preset's 500. XOR comes after the other six problems' first two seeds: the authors' own problem
# file says of it "It can still be solve[d] with HF at T=100, but success is very rare".
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dir="${CHECKPOINT_DIR:-experiments/mitigations_paper_runs}"
python="${PYTHON:-python}"
six=addition,temporal_order,multiplication,random_permutation,memorization,temporal_order_3bit
study() { "$python" -m experiments mitigations --preset paper --checkpoint_dir "$dir" \
              --out "$(mktemp -d)" "$@" || echo "queue: failed: $*" >&2; }

study --methods lstm_adam --tasks addition,temporal_order  # the issue's LSTM criterion: 20 min
for method in hf_structural hf; do
    for seeds in 1 2; do
        study --methods "$method" --tasks "$six" --seeds "$seeds" --hf_steps 200
        study --methods "$method" --tasks "$six" --seeds "$seeds"
    done
    study --methods "$method" --seeds 3 --hf_steps 200
    study --methods "$method" --seeds 3
done
study --methods lstm_adam,esn,momentum,adam
study --lengths 200 --tasks addition,temporal_order,multiplication
