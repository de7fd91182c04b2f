"""Checks on a validated scenario that keep a run within bounded time and memory.

Kept apart from :mod:`simllm.scenario` (which defines the format) so each check is one
small function; :func:`check_scenario` runs them all before any descriptor is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import InputError

MAX_DEVICES_WITHOUT_CLUSTER = 16384
"""Largest deployment (replicas x devices per replica) accepted when the hardware is an accelerator
or a node rather than a cluster descriptor. An assumption, not a measured figure: it is above the
largest single serving deployments described publicly and keeps the per-replica state of the engine
(a few kB each) well under 1 GB. A cluster descriptor's own device count replaces it."""


MAX_ENGINE_SLOTS = 1 << 25
"""Most sequence slots (replicas x max_num_seqs, every pool together) one run allocates: the engine keeps
a few int64 arrays of max_num_seqs entries per replica, so this bounds that state near 1 GB. An
assumption, not a measured figure: it is ~500 times the largest max_num_seqs of a shipped scenario."""


def check_devices(scn: Any, file: str | Path | None = None) -> None:
    """Every pool's replicas x devices per replica together (one pool when colocated)."""
    dep = scn.deployment
    if scn.hardware.cluster:
        return  # checked against the cluster's device count when it is loaded
    specs = dep.pool_specs()  # every pool (colocated: the deployment itself)
    total = sum(sp.replicas * sp.devices_per_replica for _n, _w, sp in specs)
    if total > MAX_DEVICES_WITHOUT_CLUSTER:
        what = (f"{dep.replicas} replicas x {dep.devices_per_replica} devices" if len(specs) == 1 and
                specs[0][2] is dep else " + ".join(f"{sp.replicas} x {sp.devices_per_replica}" for _n, _w, sp in specs))
        field = "deployment.replicas" if specs[0][2] is dep else f"{max(specs, key=lambda x: x[2].replicas)[1]}.replicas"
        raise InputError(f"{what} = {total} devices, more than {MAX_DEVICES_WITHOUT_CLUSTER} without a cluster "
                         f"descriptor; describe the cluster (hardware.cluster) to simulate more", file=file, field=field)


def check_batching(scn: Any, file: str | Path | None = None) -> None:
    """A token budget below the sequence budget can never fill a batch (vLLM rejects it the same way); every pool."""
    for _name, where, sp in scn.deployment.pool_specs():
        b = sp.batching or {}
        tokens, seqs = b.get("max_num_batched_tokens"), b.get("max_num_seqs", 256)
        if isinstance(tokens, int) and isinstance(seqs, int) and not isinstance(tokens, bool) and tokens < seqs:
            raise InputError(f"max_num_batched_tokens {tokens} is below max_num_seqs {seqs}: an iteration could "
                             f"never schedule one token per sequence; raise it (vLLM's default is 8192) or lower "
                             f"max_num_seqs", file=file, field=f"{where}.batching.max_num_batched_tokens")


def check_engine_slots(scn: Any, file: str | Path | None = None) -> None:
    """replicas x max_num_seqs over every pool within :data:`MAX_ENGINE_SLOTS`, and CUDA-graph sizes no
    larger than the token budget of a step (a larger captured size never replays)."""
    total, worst = 0, None
    for _name, where, sp in scn.deployment.pool_specs():
        b = sp.batching or {}
        seqs = b.get("max_num_seqs")
        if isinstance(seqs, int) and not isinstance(seqs, bool):
            total += sp.replicas * seqs
            worst = worst if worst is not None and worst[1] >= seqs else (where, seqs)
        budget = b.get("max_num_batched_tokens", b.get("token_budget"))
        graphs = scn.deployment.cuda_graphs
        if isinstance(graphs, list) and isinstance(budget, int):
            big = [g for g in graphs if isinstance(g, int) and g > budget]
            if big:
                raise InputError(f"captured size {big[0]} exceeds the step token budget {budget} of {where}: "
                                 f"it could never replay", file=file, field="deployment.cuda_graphs")
    if total > MAX_ENGINE_SLOTS:
        raise InputError(f"{total} sequence slots (replicas x max_num_seqs) exceed the {MAX_ENGINE_SLOTS:,} one run "
                         f"holds; lower max_num_seqs (vLLM's default is 256)", file=file,
                         field=f"{worst[0]}.batching.max_num_seqs")


def check_scenario(scn: Any, file: str | Path | None = None) -> None:
    """Every bounded-work check, in order; raises the first :class:`InputError`."""
    check_devices(scn, file)
    check_batching(scn, file)
    check_engine_slots(scn, file)
    check_layer_wise(scn, file)


def check_layer_wise(scn: Any, file: str | Path | None = None) -> None:
    """``kv_layer_wise`` streams KV from a prefill pool to a decode pool: refused without them."""
    dep = scn.deployment
    if getattr(dep, "kv_layer_wise", False):
        roles = {getattr(sp, "role", None) for _n, _w, sp in dep.pool_specs()}
        if not {"prefill", "decode"} <= roles:
            raise InputError("layer-by-layer KV transfer needs a prefill and a decode pool (deployment.pools or "
                             "deployment.disaggregation)", file=file, field="deployment.kv_layer_wise")
