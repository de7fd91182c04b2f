"""Token regrouping in the expert-offloading model (simllm.placement.offload): ExpertFlow's token scheduler
groups a step's sequences by their routes before splitting the batch into micro-batches."""

import numpy as np
import pytest
from simllm.cli import main
from simllm.errors import InputError
from simllm.placement.offload import simulate_cache

KW = dict(expert_bytes=1e6, link_bw=1e9, layer_compute_s=1e-4, resident_step_s=1e-3)


def _alternating(steps=20, batch=8):
    # sequence i uses experts {0, 1} when i is even, {2, 3} when odd: two disjoint working sets, interleaved
    r = np.empty((steps, 1, batch, 2), dtype=np.int64)
    for i in range(batch):
        r[:, 0, i] = (0, 1) if i % 2 == 0 else (2, 3)
    return r


def test_regrouping_halves_the_experts_a_micro_batch_activates():
    r = _alternating()
    split = simulate_cache(r, 4, 2, micro_batches=2, **KW)
    grouped = simulate_cache(r, 4, 2, micro_batches=2, regroup=True, **KW)
    # split in the batch's order, each micro-batch activates all 4 experts; grouped by route, its own 2
    # (ExpertFlow's point: more tokens per activated expert); with a 2-expert cache both still swap 4 a step
    assert split.active_experts == pytest.approx(4.0)
    assert grouped.active_experts == pytest.approx(2.0)
    assert grouped.bytes_per_step <= split.bytes_per_step


def test_regrouping_lets_a_cache_that_holds_one_group_keep_it():
    # 8 sequences, 6 on {0, 1} and 2 on {2, 3} (sequences 1 and 5); 2 micro-batches and a 3-expert cache: split in
    # order, each half holds a {2, 3} sequence and needs all 4 experts (more than the cache: one always streams);
    # grouped by route, the first half needs only {0, 1}, which stays cached: half the bytes
    r = np.empty((30, 1, 8, 2), dtype=np.int64)
    for i in range(8):
        r[:, 0, i] = (2, 3) if i in (1, 5) else (0, 1)
    split = simulate_cache(r, 4, 3, micro_batches=2, **KW)
    grouped = simulate_cache(r, 4, 3, micro_batches=2, regroup=True, **KW)
    assert grouped.hit_rate > split.hit_rate
    assert grouped.bytes_per_step < split.bytes_per_step


def test_one_micro_batch_is_the_whole_batch_and_bad_values_are_rejected():
    r = _alternating()
    a = simulate_cache(r, 4, 3, **KW)
    b = simulate_cache(r, 4, 3, micro_batches=1, regroup=True, **KW)  # nothing to group: same run
    assert a.as_dict() | {"regroup": True} == b.as_dict()
    with pytest.raises(InputError):
        simulate_cache(r, 4, 3, micro_batches=9, **KW)  # more micro-batches than sequences
    with pytest.raises(SystemExit) as e:
        main(["offload", "--model", "mixtral-8x7b", "--cache-experts", "4", "--regroup"])
    assert e.value.code == 2
