"""The SimPy cluster simulation: pools of replicas with continuous batching, paged KV cache, KV transfers.

One concept per module: ``records`` (configuration, result, step columns), ``kv`` (the KV cache and
its block accounting), ``prefix_cache``, ``replica`` (the one iteration), ``pools`` (pool roles),
``transfer`` (KV moves between pools), ``dp_ranks`` (data-parallel attention ranks of an EP replica),
``simulation`` (arrivals, routing, results),
``replacement`` (periodic expert re-placement).
"""

from .kv import KVCache, kv_capacity_blocks
from .pools import Pool
from .records import STEP_COLUMNS, SimConfig, SimResult
from .simulation import Simulation
from .transfer import link_network, topology_network

__all__ = ["KVCache", "Pool", "STEP_COLUMNS", "SimConfig", "SimResult", "Simulation", "kv_capacity_blocks",
           "link_network", "topology_network"]
