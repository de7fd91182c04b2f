"""Periodic expert re-placement during a simulation (simllm.sim.replacement) with drifting expert loads."""

from __future__ import annotations

import numpy as np
import pytest

from simllm.errors import InputError
from simllm.scenario import prepare, scenario_from_dict, simulate

SMALL = {"samples": 2, "sample_layers": 2, "layers": 2, "grid_max": 2048, "grid_points": 24}


def _scn(replan_every_s=None, drift=0.4, every=2.0, jump=True, replicas=1, n=300, router="round_robin",
         migrate="all") -> dict:
    pl = {"policy": "greedy_replicated", "redundant": 16}
    if replan_every_s is not None:
        pl["replan_every_s"] = replan_every_s
        pl["migrate"] = migrate
    el = {"alpha": 1.0, "seed": 0, "drift": drift}
    if replan_every_s is None:
        el["drift_every_s"] = every
    return {"name": "ep-replace", "model": "deepseek-v3", "hardware": {"cluster": "h800-ep"},
            "deployment": {"ep": 16, "replicas": replicas, "weight_dtype": "fp8", "placement": pl,
                           "expert_loads": el, "moe": dict(SMALL),
                           "batching": {"policy": "vllm-v0", "max_num_seqs": 1024, "max_num_batched_tokens": 131072},
                           "kv": {"block_size": 64}, "router": {"policy": router}},
            "workload": {"generator": {"arrivals": {"process": "poisson", "rate": 150},
                                       "lengths": {"kind": "lognormal", "prompt_median": 256, "prompt_sigma": 0.5,
                                                   "output_median": 128, "output_sigma": 0.5},
                                       "num_requests": n}},
            "sim": {"jump": jump}, "seed": 0}


def _run(d):
    return simulate(prepare(scenario_from_dict(d)))


@pytest.mark.parametrize("replicas,router", [(1, "round_robin"), (2, "round_robin"), (2, "least_kv_load")])
def test_replacement_jump_equals_step(replicas, router):
    out = {}
    for jump in (True, False):
        req, steps, s = _run(_scn(replan_every_s=2.0, jump=jump, replicas=replicas, router=router))
        out[jump] = (req, steps, s)
    (rj, sj, mj), (rs, ss, ms) = out[True], out[False]
    assert mj["completed"] == ms["completed"] == 300
    for col in ("first_token_s", "completion_s"):
        assert np.array_equal(rj[col].to_numpy(), rs[col].to_numpy()), col
    ej, es = mj["replacement"]["events"], ms["replacement"]["events"]
    assert len(ej) == len(es) >= 3 * replicas
    assert [(e["replica"], e["time_s"], e["tokens_served"], e["migration_s"]) for e in ej] == \
           [(e["replica"], e["time_s"], e["tokens_served"], e["migration_s"]) for e in es]
    assert len(sj) < len(ss)  # jumping still jumps


def test_replacement_rebalances_drifted_loads():
    _, _, stale = _run(_scn(replan_every_s=None))
    _, _, fresh = _run(_scn(replan_every_s=2.0))
    rs, rf = stale["replacement"], fresh["replacement"]
    assert not rs["replan"] and rs["moved_bytes"] == 0 and rs["count"] >= 3
    assert rf["replan"] and rf["moved_bytes"] > 0 and rf["migration_s"] > 0
    ev = [e for e in rf["events"] if e["interval"] >= 2]  # interval 1 observes the loads planned for
    assert ev and all(e["max_mean_after"] < e["max_mean_before"] and e["moved_bytes"] > 0 for e in ev)
    # served imbalance: a stale placement drifts away, the re-placed one lags one interval behind
    k = min(len(rs["events"]), len(rf["events"]))
    served = lambda r: np.mean([e["max_mean_served"] for e in r["events"][1:k]])  # noqa: E731
    assert served(rf) < served(rs)
    # drift alone (no re-placement) makes decoding slower than static loads
    _, _, static = _run(_scn(replan_every_s=None, drift=0.0))
    assert stale["tpot_s"]["mean"] > static["tpot_s"]["mean"]


@pytest.mark.parametrize("pl,el,match", [
    ({"replan_every_s": 0}, {}, "replan_every_s"),
    ({}, {"drift": 0.3}, "drift needs an interval"),
    ({"replan_every_s": 1.0}, {"drift": -1}, "drift"),
    ({"replan_every_s": 1.0}, {"drift": 0.1, "drift_every_s": 2.0}, "differs"),
])
def test_replacement_errors(pl, el, match):
    d = _scn()
    d["deployment"]["placement"] = {"policy": "greedy_replicated", "redundant": 16, **pl}
    d["deployment"]["expert_loads"] = {"alpha": 1.0, "seed": 0, **el}
    with pytest.raises(InputError, match=match):
        prepare(scenario_from_dict(d))


def test_migration_that_pays_moves_less_for_no_worse_tpot():
    _, _, everything = _run(_scn(replan_every_s=2.0, migrate="all"))
    _, _, pays = _run(_scn(replan_every_s=2.0, migrate="pays"))
    assert pays["replacement"]["moved_bytes"] <= 0.5 * everything["replacement"]["moved_bytes"]
    assert pays["tpot_s"]["mean"] <= everything["tpot_s"]["mean"] * 1.01


def test_bad_migrate_option_exits_2():
    from simllm.errors import InputError

    d = _scn(replan_every_s=2.0, migrate="some")
    with pytest.raises(InputError, match="migrate"):
        _run(d)
