"""Layer-by-layer KV transfer between pools (``kv_layer_wise``): the prefill's KV streams to its decode replica
while the last prefill step runs; checked against the closed form on a dedicated link, with the invariants and
jumping == stepping of the disaggregated property test, and rejected where it cannot apply."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from simllm.errors import InputError
from simllm.scenario import prepare, scenario_from_dict, simulate
from simllm.scenario_checks import check_scenario
from simllm.sim import SimConfig, link_network
from simllm.sim.fakes import AffineCost
from simllm.workload import Request
from test_disagg import DisaggSimulation, _pool, cases

BW, LAT = 1e10, 1e-5


def _one(layer_wise: bool, layers: int = 4, prompt: int = 2000, bw: float = 1e10):
    cost = AffineCost(a=1e-3, c=1e-6, num_layers=layers)
    cfg = SimConfig(kv_layer_wise=layer_wise)
    sim = DisaggSimulation([Request(0, 0.0, prompt, 5)], prefill=_pool(1, 4000, cost=cost, config=cfg),
                           decode=_pool(1, 4000, cost=cost, config=cfg), network=link_network(bw, LAT), config=cfg)
    res = sim.run()
    src = sim.replicas[0]
    nbytes = src.kv_bytes_tok * len(sim.ranks[src.index]) * prompt
    return sim, res, nbytes, cost.step_time(prompt, prompt * prompt / 2.0, 1, 0, 0.0)


def test_closed_form_on_a_dedicated_link():
    _, off, nbytes, pre = _one(False)
    # after the prefill step: the whole KV over the link, one latency
    assert off.request_columns["kv_transfer_s"][0] == pytest.approx(LAT + nbytes / BW, rel=1e-9)
    _, on, nbytes, pre = _one(True, layers=4)
    # 3/4 of it streams during the step (and is done by its end: the link is fast enough); the last layer's quarter
    # starts when the step ends; the transfer is counted from its start, the step's start
    assert 0.75 * nbytes / BW + LAT < pre
    assert on.request_columns["kv_transfer_s"][0] == pytest.approx(pre + LAT + 0.25 * nbytes / BW, rel=1e-9)
    # the first decoded token comes earlier by what streamed during the step
    assert on.completion_s[0] < off.completion_s[0]
    assert off.completion_s[0] - on.completion_s[0] == pytest.approx(0.75 * nbytes / BW, rel=1e-6)
    assert on.first_token_s[0] == off.first_token_s[0]  # the prefill itself is unchanged


def test_slow_link_streams_past_the_step():
    # a link slower than the step: the KV is still on the wire when the step ends, so layer-wise gains the step
    # time overlapped at most (both flows share the one link)
    _, off, nbytes, pre = _one(False, bw=1e9)
    sim, on, nbytes, pre = _one(True, bw=1e9)
    assert nbytes / 1e9 > pre
    gain = off.completion_s[0] - on.completion_s[0]
    assert 0 < gain <= pre + 1e-12


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_invariants_and_jump_equals_step_layer_wise(c):
    def run(jump):
        kw = dict(jump=jump, preemption=c["preemption"], block_size=c["block_size"], prefix_unit_tokens=32,
                  kv_layer_wise=True)
        cost = AffineCost(a=1e-3, c=1e-6, num_layers=8)
        sim = DisaggSimulation(
            c["reqs"], prefill=_pool(c["p_reps"], c["p_blocks"], c["p_seqs"], c["budget"], c["router"], cost=cost,
                                     policy=c["p_policy"], config=SimConfig(prefix_caching=c["p_cache"], **kw)),
            decode=_pool(c["d_reps"], c["d_blocks"], c["d_seqs"], c["budget"], c["router"], cost=cost,
                         config=SimConfig(prefix_caching=c["d_cache"], **kw)),
            network=link_network(c["bw"], 1e-5), config=SimConfig(**kw))
        return sim, sim.run()

    sim, res = run(True)
    rejected = np.array([bool(r) for r in res.rejected_reason])
    done = np.isfinite(res.completion_s)
    assert np.all(done ^ rejected)
    assert np.array_equal(res.generated_tokens[done], res.output_tokens[done])
    for r in sim.replicas:
        assert r.kv_peak <= r.kv.capacity
    # a transfer never lands before its prefill has ended
    moved = np.isfinite(res.request_columns["kv_transfer_s"])
    assert np.all(res.completion_s[moved & done] > res.first_token_s[moved & done])
    _, res2 = run(False)
    assert np.array_equal(res.completion_s, res2.completion_s, equal_nan=True)
    assert np.array_equal(res.first_token_s, res2.first_token_s, equal_nan=True)


def _scn(overrides, pools=True):
    dep = {"kv_link": {"bandwidth": "10 GB/s"}, "pools": [{"name": "prefill", "role": "prefill", "tp": 1},
                                                          {"name": "decode", "role": "decode", "tp": 1}]}
    return scenario_from_dict({"name": "pd", "model": "llama3-8b", "hardware": {"accelerator": "h100-sxm"},
                               "deployment": dep if pools else {},
                               "workload": {"generator": {"arrivals": {"process": "poisson", "rate": 4.0},
                                                          "num_requests": 60}}}, overrides)


def test_rejected_without_pools_and_changes_the_disaggregated_output():
    with pytest.raises(InputError) as e:
        check_scenario(_scn(["deployment.kv_layer_wise=true"], pools=False))
    assert e.value.field == "deployment.kv_layer_wise"
    cfg = SimConfig(kv_layer_wise=True)
    with pytest.raises(ValueError, match="layers"):  # a cost model that does not know the model's layers
        DisaggSimulation([Request(0, 0.0, 10, 3)], prefill=_pool(1, 100, config=cfg), decode=_pool(1, 100, config=cfg),
                         network=link_network(BW, LAT), config=cfg)
    base = simulate(prepare(_scn([])))[0]
    lw = simulate(prepare(_scn(["deployment.kv_layer_wise=true"])))[0]
    assert lw["e2e_s"].mean() < base["e2e_s"].mean()  # the KV moved while the prefill ran
    assert np.array_equal(lw["ttft_s"].to_numpy(), base["ttft_s"].to_numpy())
