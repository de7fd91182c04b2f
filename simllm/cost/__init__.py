"""Roofline cost model: operators and collectives to seconds. Pure functions, no simulation time.

- :mod:`.kernels`      GEMM / elementwise / attention kernel times (tile- and wave-aware roofline)
- :mod:`.ops`          per-operator FLOPs, bytes and seconds of a layer (TP sharding, dtypes, MLA, MoE)
- :mod:`.collectives`  alpha-beta collectives (ring, tree, hierarchical, all-to-all, send/recv)
- :mod:`.calibration`  the dimensionless efficiency parameters and how they transfer between devices
- :mod:`.fit`          fitting / checking them against measured tables
- :mod:`.step`         :func:`make_step_cost`: the simulator's per-replica step cost model
- :mod:`.moe_ep`       :func:`~simllm.cost.moe_ep.make_ep_step_cost`: expert-parallel MoE replica (DP attention,
                       placed experts); it prices dispatch on a :mod:`simllm.topology`, which itself uses
                       the formulas of :mod:`.collectives`, so this package does not import it (import it
                       from ``simllm.cost.moe_ep``): the layers are cost formulas -> topology -> EP cost.
"""

from . import collectives
from .calibration import Calibration, calibration_for, load_calibration
from .interface import BatchShape, StepCost, StepCostModel
from .step import ReplicaStepCost, make_step_cost

__all__ = ["BatchShape", "Calibration", "ReplicaStepCost", "StepCost", "StepCostModel",
           "calibration_for", "collectives", "load_calibration", "make_step_cost"]
