"""``--set`` into lists (``deployment.pools.0.tp=4``) and the bounded-work checks over every pool."""

import pytest

from simllm.config import set_dotted
from simllm.errors import InputError
from simllm.scenario import scenario_from_dict
from simllm.scenario_checks import MAX_DEVICES_WITHOUT_CLUSTER, check_scenario


def _pools(hardware=None):
    return {"name": "pd", "model": "llama3-8b", "hardware": hardware or {"accelerator": "h100-sxm"},
            "deployment": {"kv_link": {"bandwidth": "50 GB/s"}, "pools": [
                {"name": "prefill", "role": "prefill", "tp": 1},
                {"name": "decode", "role": "decode", "tp": 2}]},
            "workload": {"generator": {"arrivals": {"process": "poisson", "rate": 1.0}, "num_requests": 5}}}


def test_set_indexes_lists():
    scn = scenario_from_dict(_pools(), ["deployment.pools.0.tp=4", "deployment.pools.1.batching={policy: orca}"])
    assert scn.deployment.pools[0].tp == 4 and scn.deployment.pools[1].batching["policy"] == "orca"
    d = {"a": [{"b": 1}, 2]}
    set_dotted(d, "a.1", 5)
    assert d == {"a": [{"b": 1}, 5]}


@pytest.mark.parametrize("path", ["deployment.pools.2.tp", "deployment.pools.x.tp", "deployment.pools.-1.tp"])
def test_set_rejects_bad_indices(path):
    with pytest.raises(InputError, match="is a list of 2") as e:
        scenario_from_dict(_pools(), [f"{path}=4"])
    assert e.value.field == path


def test_device_bound_counts_every_pool():
    n = MAX_DEVICES_WITHOUT_CLUSTER // 2 + 1  # each pool alone is within the bound, both together are not
    scn = scenario_from_dict(_pools(), [f"deployment.pools.0.replicas={n}", f"deployment.pools.1.replicas={n // 2}"])
    with pytest.raises(InputError, match="devices, more than") as e:
        check_scenario(scn)
    assert e.value.field == "deployment.pools.0.replicas"  # the pool with the most replicas


def test_batching_check_covers_every_pool():
    scn = scenario_from_dict(_pools(), ["deployment.pools.1.batching={policy: vllm-v0, max_num_seqs: 64, "
                                        "max_num_batched_tokens: 32}"])
    with pytest.raises(InputError) as e:
        check_scenario(scn)
    assert e.value.field == "deployment.pools.1.batching.max_num_batched_tokens"
