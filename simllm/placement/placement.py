"""The :class:`Placement` of expert replicas on devices, per-device loads and re-planning."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..jsonable import jsonable


def as_layer_loads(loads: Any, *, name: str = "loads") -> np.ndarray:
    """``[E]`` or ``[L, E]`` non-negative finite loads -> float64 ``[L, E]``."""
    a = np.asarray(loads, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0 or a.shape[0] == 0:
        raise InputError(f"expected loads of shape [E] or [L, E], got shape {a.shape}", field=name)
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise InputError("loads must be finite and non-negative", field=name)
    return a


@dataclass
class LayerInfo:
    """How one layer was solved (for reports): objective, bound, gap, status."""

    solve_s: float = 0.0
    objective: Optional[float] = None  # the solver's objective (makespan, mean device load = 1)
    bound: Optional[float] = None  # LP-relaxation bound on the makespan (mean device load = 1)
    gap: Optional[float] = None  # (makespan - bound) / makespan
    status: str = ""
    message: str = ""


@dataclass
class Placement:
    """Replicas of every expert of every layer on ``devices`` devices with ``slots`` slots each.

    ``expert[l, g, s]`` is the expert in slot ``s`` of device ``g`` (``-1``: empty slot);
    ``share[l, g, s]`` the fraction of that expert's tokens the replica serves (the shares
    of one expert's replicas sum to 1). ``loads[l, e]`` are the loads it was planned for.
    """

    expert: np.ndarray  # int32 [L, G, S]
    share: np.ndarray  # float64 [L, G, S]
    loads: np.ndarray  # float64 [L, E]
    nodes: int = 1
    policy: str = ""
    layer_info: list[LayerInfo] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    solve_s: float = 0.0  # wall time of the whole place() call

    # -- shape -----------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.expert.shape[0]

    @property
    def devices(self) -> int:
        return self.expert.shape[1]

    @property
    def slots_per_device(self) -> int:
        return self.expert.shape[2]

    @property
    def num_experts(self) -> int:
        return self.loads.shape[1]

    @property
    def devices_per_node(self) -> int:
        return self.devices // self.nodes

    def node_of(self, device: int | np.ndarray) -> int | np.ndarray:
        return device // self.devices_per_node

    # -- queries ---------------------------------------------------------------------------
    def replicas(self, layer: int, expert: int) -> list[tuple[int, float]]:
        """``[(device, share), ...]`` of one expert's replicas."""
        g, s = np.nonzero(self.expert[layer] == expert)
        return [(int(a), float(self.share[layer, a, b])) for a, b in zip(g, s)]

    def replica_counts(self) -> np.ndarray:
        """``[L, E]`` number of replicas of each expert."""
        L, E = self.loads.shape
        flat = self.expert.reshape(L, -1)
        out = np.zeros((L, E), dtype=np.int64)
        for l in range(L):
            ids = flat[l][flat[l] >= 0]
            out[l] = np.bincount(ids, minlength=E)
        return out

    def presence(self) -> np.ndarray:
        """``[L, E, G]`` bool: expert ``e`` has a replica on device ``g``."""
        L, G, S = self.expert.shape
        out = np.zeros((L, self.num_experts, G), dtype=bool)
        l_idx, g_idx, s_idx = np.nonzero(self.expert >= 0)
        out[l_idx, self.expert[l_idx, g_idx, s_idx], g_idx] = True
        return out

    def device_loads(self, counts: Any = None) -> np.ndarray:
        """``[L, G]`` tokens per device for ``counts`` (default: the planned loads)."""
        return moe_device_loads(self, self.loads if counts is None else counts)

    def imbalance(self, counts: Any = None) -> np.ndarray:
        """``[L]`` max / mean device load (1.0 = perfectly balanced; nan for an idle layer)."""
        d = self.device_loads(counts)
        mean = d.mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(mean > 0, d.max(axis=1) / np.where(mean > 0, mean, 1), np.nan)

    # -- validity --------------------------------------------------------------------------
    def problems(self, atol: float = 1e-6) -> list[str]:
        """What is wrong with this placement (empty list: valid)."""
        out: list[str] = []
        L, G, S = self.expert.shape
        E = self.num_experts
        if self.share.shape != self.expert.shape:
            return [f"share shape {self.share.shape} differs from expert shape {self.expert.shape}"]
        if self.loads.shape[0] != L:
            return [f"loads have {self.loads.shape[0]} layers, placement {L}"]
        if self.nodes < 1 or G % self.nodes:
            out.append(f"{G} devices do not split into {self.nodes} equal nodes")
        if np.any(self.expert < -1) or np.any(self.expert >= E):
            out.append(f"expert ids outside [-1, {E})")
            return out
        empty = self.expert < 0
        if np.any(self.share[empty] != 0):
            out.append("empty slot with a non-zero share")
        if np.any(self.share < -atol) or np.any(self.share > 1 + atol) or not np.all(np.isfinite(self.share)):
            out.append("shares outside [0, 1]")
        for l in range(L):
            ids = self.expert[l][~empty[l]]
            cnt = np.bincount(ids, minlength=E)
            missing = np.nonzero(cnt == 0)[0]
            if missing.size:
                out.append(f"layer {l}: expert {int(missing[0])} has no replica ({missing.size} experts unplaced)")
            tot = np.bincount(ids, weights=self.share[l][~empty[l]], minlength=E)
            bad = np.nonzero(np.abs(tot - 1.0) > 1e-6 * np.maximum(1, cnt))[0]
            bad = bad[cnt[bad] > 0]
            if bad.size:
                e = int(bad[0])
                out.append(f"layer {l}: shares of expert {e} sum to {tot[e]:.9g}, not 1")
        return out

    def check(self) -> "Placement":
        """Raise ``ValueError`` naming the first problem; return self when valid."""
        p = self.problems()
        if p:
            raise ValueError(f"invalid placement ({self.policy}): {p[0]}" + (f" (+{len(p) - 1} more)" if len(p) > 1 else ""))
        return self

    # -- summaries and output --------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        imb = self.imbalance()
        d = self.device_loads()
        mean = d.mean(axis=1)
        ok = mean > 0
        min_mean = np.where(ok, d.min(axis=1) / np.where(ok, mean, 1), np.nan)
        out: dict[str, Any] = {
            "policy": self.policy,
            "layers": self.num_layers,
            "experts": self.num_experts,
            "devices": self.devices,
            "nodes": self.nodes,
            "slots_per_device": self.slots_per_device,
            "replicas": int((self.expert >= 0).sum() // max(1, self.num_layers)),
            "max_mean_avg": float(np.nanmean(imb)) if np.any(ok) else None,
            "max_mean_worst": float(np.nanmax(imb)) if np.any(ok) else None,
            "min_mean_avg": float(np.nanmean(min_mean)) if np.any(ok) else None,
            "solve_s": self.solve_s,
            "solve_s_per_layer": self.solve_s / max(1, self.num_layers),
        }
        bounds = [i.bound for i in self.layer_info if i.bound is not None]
        if bounds and len(self.layer_info) == self.num_layers:
            gaps = np.array([(imb[l] - i.bound) / imb[l] if i.bound is not None and imb[l] > 0 else np.nan
                             for l, i in enumerate(self.layer_info)])
            out["bound_kind"] = "lp_relaxation"
            out["bound_avg"] = float(np.mean(bounds))
            out["gap_avg"] = float(np.nanmean(gaps))
            out["gap_worst"] = float(np.nanmax(gaps))
            statuses: dict[str, int] = {}
            for i in self.layer_info:
                statuses[i.status] = statuses.get(i.status, 0) + 1
            out["status_counts"] = statuses
        if self.messages:
            out["messages"] = list(self.messages)
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One row per occupied slot: layer, device, node, slot, expert, share, tokens."""
        rows = []
        L, G, S = self.expert.shape
        for l in range(L):
            for g in range(G):
                for s in range(S):
                    e = int(self.expert[l, g, s])
                    if e < 0:
                        continue
                    sh = float(self.share[l, g, s])
                    rows.append({"layer": l, "device": g, "node": int(self.node_of(g)), "slot": s, "expert": e,
                                 "share": sh, "tokens": sh * float(self.loads[l, e])})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "layers": [
                {
                    "layer": l,
                    "devices": [[[int(e), round(float(s), 9)] for e, s in zip(self.expert[l, g], self.share[l, g]) if e >= 0]
                                for g in range(self.devices)],
                    "device_loads": [float(x) for x in self.device_loads()[l]],
                    **({"info": vars(self.layer_info[l])} if l < len(self.layer_info) else {}),
                }
                for l in range(self.num_layers)
            ],
        }

    def write(self, out_dir: str | Path, stem: Optional[str] = None) -> list[Path]:
        """Write ``<stem>.json`` (nested) and ``<stem>.csv`` (one row per replica) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or f"placement_{self.policy or 'policy'}"
        jp, cp = out / f"{stem}.json", out / f"{stem}.csv"
        jp.write_text(json.dumps(jsonable(self.to_dict()), indent=1))
        with cp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["layer", "device", "node", "slot", "expert", "share", "tokens"])
            w.writeheader()
            w.writerows(self.rows())
        return [jp, cp]


def moe_device_loads(placement: Placement, counts: Any) -> np.ndarray:
    """Tokens per device ``[L, G]`` for per-expert token ``counts`` (``[L, E]`` or ``[E]``).

    Each replica serves its ``share`` of its expert's tokens. A ``[E]`` vector applies to
    every layer. The MoE step cost of a layer is set by the max over devices.
    """
    c = np.asarray(counts, dtype=np.float64)
    L, G, S = placement.expert.shape
    if c.ndim == 1:
        c = np.broadcast_to(c, (L, c.shape[0]))
    if c.shape != (L, placement.num_experts):
        raise InputError(f"counts of shape {c.shape} do not match placement ({L} layers, {placement.num_experts} experts)",
                         field="counts")
    e = placement.expert.reshape(L, G * S)
    tok = np.take_along_axis(c, np.maximum(e, 0), axis=1) * placement.share.reshape(L, G * S)
    tok[e < 0] = 0.0
    return tok.reshape(L, G, S).sum(axis=2)


def moved_replicas(previous: Placement, new: Placement) -> np.ndarray:
    """``[L]`` replicas in ``new`` on a device that did not hold that expert in ``previous``."""
    if previous.expert.shape[:2] != new.expert.shape[:2] or previous.num_experts != new.num_experts:
        raise InputError("previous and new placements differ in layers, devices or experts", field="previous")
    return (new.presence() & ~previous.presence()).sum(axis=(1, 2))


def migration_seconds(moved_bytes: float, link_bandwidth: float) -> float:
    """Time to move ``moved_bytes`` of expert weights over a link of ``link_bandwidth`` B/s."""
    if link_bandwidth <= 0:
        raise InputError(f"link bandwidth must be positive, got {link_bandwidth}", field="link_bandwidth")
    return moved_bytes / link_bandwidth
