"""The SimPy cluster simulation: router, replicas with continuous batching, paged KV cache."""

from .engine import STEP_COLUMNS, SimConfig, SimResult, Simulation
from .kv import KVCache, kv_capacity_blocks

__all__ = ["KVCache", "STEP_COLUMNS", "SimConfig", "SimResult", "Simulation", "kv_capacity_blocks"]
