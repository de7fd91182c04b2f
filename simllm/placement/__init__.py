"""Expert placement for MoE serving: load models, placement policies, per-device loads.

* :mod:`.loads`: expert popularity (uniform, Zipf, recorded CSV) and per-step routing samples.
* :mod:`.policies`, :mod:`.ilp`: ``contiguous``, ``round_robin``, ``greedy_replicated`` (EPLB),
  ``greedy_hierarchical``, ``ilp`` - registered by name (:func:`build_policy`).
* :class:`Placement`: replicas per expert with device and token share; :func:`moe_device_loads`
  (tokens per device for the MoE step cost) and :func:`replan` (periodic re-placement with
  migration bytes).
"""

from .placement import LayerInfo, Placement, migration_seconds, moe_device_loads, moved_replicas
from .registry import PlacementPolicy, build_policy, get_policy_class, policy_names, register, replan
from . import policies as _policies  # noqa: F401  (registers the heuristics)
from . import ilp as _ilp  # noqa: F401  (registers the ILP)
from . import affinity as _affinity  # noqa: F401  (registers ilp_affinity)
from .policies import Contiguous, GreedyHierarchical, GreedyReplicated, RoundRobin
from .ilp import ILP

__all__ = [
    "ILP", "Contiguous", "GreedyHierarchical", "GreedyReplicated", "LayerInfo", "Placement", "PlacementPolicy",
    "RoundRobin", "build_policy", "get_policy_class", "migration_seconds", "moe_device_loads", "moved_replicas",
    "policy_names", "register", "replan",
]
