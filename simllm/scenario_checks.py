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


def check_scenario(scn: Any, file: str | Path | None = None) -> None:
    """Every bounded-work check, in order; raises the first :class:`InputError`."""
    check_devices(scn, file)
    check_batching(scn, file)
    check_layer_wise(scn, file)


def check_layer_wise(scn: Any, file: str | Path | None = None) -> None:
    """``kv_layer_wise`` streams KV from a prefill pool to a decode pool: refused without them."""
    dep = scn.deployment
    if getattr(dep, "kv_layer_wise", False):
        roles = {getattr(sp, "role", None) for _n, _w, sp in dep.pool_specs()}
        if not {"prefill", "decode"} <= roles:
            raise InputError("layer-by-layer KV transfer needs a prefill and a decode pool (deployment.pools or "
                             "deployment.disaggregation)", file=file, field="deployment.kv_layer_wise")
