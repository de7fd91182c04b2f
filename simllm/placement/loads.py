"""Expert-load models for MoE layers.

* Popularity per layer (``[L, E]``, rows sum to 1): :func:`uniform_popularity`,
  :func:`zipf_popularity` (power law over a seeded per-layer permutation of the experts;
  alpha about 1.0 for DeepSeek-V3/R1, 1.2 for Qwen3-235B), or recorded token counts from a
  CSV (:func:`read_loads_csv`, columns ``layer, expert, tokens``).
* Per step: :class:`RoutingSampler` draws each token's top-k experts without duplicates
  (Gumbel-top-k on log-popularity, vectorised over tokens), with optional group-limited
  routing (DeepSeek-V3 node-limited, Pangu MoGE), temporal drift and inter-layer affinity,
  and counts tokens per expert. Same seed, same counts.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np

from ..errors import InputError

SeedLike = Union[int, np.random.Generator, None]
ROUTINGS = ("topk", "grouped", "moge")


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_dims(num_layers: int, num_experts: int) -> None:
    if int(num_layers) < 1 or int(num_experts) < 1:
        raise InputError(f"need at least one layer and one expert, got {num_layers} x {num_experts}",
                         field="layers/experts")


def uniform_popularity(num_layers: int, num_experts: int) -> np.ndarray:
    """Every expert equally popular: ``[L, E]`` of ``1/E``."""
    _check_dims(num_layers, num_experts)
    return np.full((num_layers, num_experts), 1.0 / num_experts)


def zipf_popularity(num_layers: int, num_experts: int, alpha: float, seed: SeedLike = 0,
                    permute: bool = True) -> np.ndarray:
    """Power-law popularity ``p ~ 1 / rank^alpha``, ranks over a seeded per-layer permutation."""
    _check_dims(num_layers, num_experts)
    if not math.isfinite(alpha) or alpha < 0:
        raise InputError(f"must be a finite number >= 0, got {alpha}", field="alpha")
    rng = _rng(seed)
    w = 1.0 / np.arange(1, num_experts + 1, dtype=np.float64) ** alpha
    w /= w.sum()
    out = np.empty((num_layers, num_experts))
    for l in range(num_layers):
        if permute:
            out[l, rng.permutation(num_experts)] = w
        else:
            out[l] = w
    return out


def expected_loads(popularity: np.ndarray, tokens: float, top_k: int) -> np.ndarray:
    """Expected tokens per expert when ``tokens`` tokens each pick ``top_k`` experts (``p * tokens * k``)."""
    p = np.asarray(popularity, dtype=np.float64)
    return p / p.sum(axis=-1, keepdims=True) * float(tokens) * int(top_k)


def expected_distinct_experts(num_experts: int, top_k: int, tokens: int) -> float:
    """Experts touched by ``tokens`` tokens under uniform top-k routing: ``E (1 - (1 - K/E)^B)``."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def read_loads_csv(path: str | Path, num_layers: Optional[int] = None, num_experts: Optional[int] = None
                   ) -> np.ndarray:
    """Recorded loads from a CSV with columns ``layer, expert, tokens`` -> ``[L, E]`` float array.

    Missing (layer, expert) pairs count 0 tokens. Errors name the file, the line and the column.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", file=p)
    try:
        f = p.open(newline="")
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", file=p) from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError("empty file; expected a header 'layer,expert,tokens'", file=p) from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise InputError(f"not a readable CSV ({e})", file=p) from None
        cols = [h.strip().lower() for h in header]
        idx = {}
        for c in ("layer", "expert", "tokens"):
            if c not in cols:
                raise InputError(f"missing column {c!r} (have: {', '.join(cols) or 'none'}); "
                                 "expected columns layer,expert,tokens", file=p, field=f"column {c}")
            idx[c] = cols.index(c)
        entries: dict[tuple[int, int], float] = {}
        try:
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not x.strip() for x in row):
                    continue
                vals = {}
                for c, i in idx.items():
                    raw = row[i].strip() if i < len(row) else ""
                    where = f"line {line_no}: column {c}"
                    try:
                        v = float(raw)
                    except ValueError:
                        raise InputError(f"expected a number, got {raw!r}", file=p, field=where) from None
                    if not math.isfinite(v) or v < 0:
                        raise InputError(f"expected a finite number >= 0, got {raw!r}", file=p, field=where)
                    if c != "tokens" and v != int(v):
                        raise InputError(f"expected a non-negative integer id, got {raw!r}", file=p, field=where)
                    vals[c] = v
                key = (int(vals["layer"]), int(vals["expert"]))
                if key in entries:
                    raise InputError(f"duplicate entry for layer {key[0]} expert {key[1]}", file=p,
                                     field=f"line {line_no}")
                if num_experts is not None and key[1] >= num_experts:
                    raise InputError(f"expert {key[1]} out of range (model has {num_experts} experts)",
                                     file=p, field=f"line {line_no}: column expert")
                if num_layers is not None and key[0] >= num_layers:
                    raise InputError(f"layer {key[0]} out of range (model has {num_layers} MoE layers)",
                                     file=p, field=f"line {line_no}: column layer")
                entries[key] = vals["tokens"]
        except (csv.Error, UnicodeDecodeError) as e:
            raise InputError(f"not a readable CSV ({e})", file=p) from None
    if not entries:
        raise InputError("no data rows", file=p)
    L = num_layers if num_layers is not None else 1 + max(k[0] for k in entries)
    E = num_experts if num_experts is not None else 1 + max(k[1] for k in entries)
    out = np.zeros((L, E))
    for (l, e), v in entries.items():
        out[l, e] = v
    return out


class RoutingSampler:
    """Draw per-step token-to-expert routes and counts for ``L`` MoE layers.

    ``popularity`` ``[L, E]`` (or ``[E]``): routing probabilities before top-k. Each token picks
    ``top_k`` distinct experts by Gumbel-top-k on ``log p`` (sampling without replacement
    proportional to ``p``). ``routing``:

    * ``topk``: plain top-k over all experts;
    * ``grouped`` (DeepSeek-V3 node-limited): experts in ``num_groups`` contiguous groups; a token
      keeps the ``topk_groups`` groups with the highest sum of its top-2 scores, then top-k inside;
    * ``moge`` (Pangu MoGE): ``top_k / num_groups`` experts from every group (balanced by construction).

    ``drift``: after each :meth:`sample`, every log-popularity takes a N(0, drift^2) random-walk
    step (temporal drift). ``affinity`` in [0, 1): experts chosen at layer ``l`` make
    ``perm_l(e)`` more likely at layer ``l+1`` (logit bonus ``log(1 + affinity E / K)``).
    """

    def __init__(self, popularity: np.ndarray, top_k: int, *, routing: Literal["topk", "grouped", "moge"] = "topk",
                 num_groups: int = 1, topk_groups: Optional[int] = None, drift: float = 0.0, affinity: float = 0.0,
                 seed: SeedLike = 0):
        p = np.asarray(popularity, dtype=np.float64)
        if p.ndim == 1:
            p = p[None, :]
        if p.ndim != 2 or p.shape[1] < 1 or not np.all(np.isfinite(p)) or np.any(p < 0):
            raise InputError("popularity must be finite, non-negative, of shape [E] or [L, E]", field="popularity")
        L, E = p.shape
        if routing not in ROUTINGS:
            raise InputError(f"unknown routing {routing!r}; known: {', '.join(ROUTINGS)}", field="routing")
        if not 1 <= top_k <= E:
            raise InputError(f"top_k must be in [1, {E}], got {top_k}", field="top_k")
        if num_groups < 1 or E % num_groups:
            raise InputError(f"{E} experts do not split into {num_groups} groups", field="num_groups")
        gsize = E // num_groups
        if routing == "grouped":
            topk_groups = topk_groups or num_groups
            if not 1 <= topk_groups <= num_groups or topk_groups * gsize < top_k:
                raise InputError(f"topk_groups {topk_groups} of {num_groups} groups of {gsize} cannot hold "
                                 f"top_k {top_k}", field="topk_groups")
        if routing == "moge" and (top_k % num_groups or top_k // num_groups > gsize):
            raise InputError(f"MoGE needs top_k ({top_k}) divisible by num_groups ({num_groups})", field="top_k")
        if drift < 0 or not 0 <= affinity < 1:
            raise InputError("drift must be >= 0 and affinity in [0, 1)", field="drift/affinity")
        self.rng = _rng(seed)
        with np.errstate(divide="ignore"):
            self.logp = np.log(p / np.where(p.sum(axis=1, keepdims=True) > 0, p.sum(axis=1, keepdims=True), 1))
        self.L, self.E, self.top_k = L, E, int(top_k)
        self.routing, self.num_groups, self.topk_groups = routing, num_groups, topk_groups
        self.drift, self.affinity = float(drift), float(affinity)
        self.next_perm = np.stack([self.rng.permutation(E) for _ in range(max(L - 1, 0))]) if affinity > 0 and L > 1 else None

    @property
    def popularity(self) -> np.ndarray:
        """Current routing probabilities ``[L, E]`` (after drift)."""
        p = np.exp(self.logp - self.logp.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def _topk(self, scores: np.ndarray) -> np.ndarray:
        """Top-k expert ids ``[B, K]`` of perturbed scores ``[B, E]`` under the routing rule."""
        B, E, K = scores.shape[0], self.E, self.top_k
        G = self.num_groups
        if self.routing == "moge":
            per = K // G
            s = scores.reshape(B, G, E // G)
            idx = np.argpartition(-s, per - 1, axis=2)[:, :, :per] if per < E // G else np.broadcast_to(
                np.arange(E // G), (B, G, E // G))
            return (idx + (np.arange(G) * (E // G))[None, :, None]).reshape(B, K)
        if self.routing == "grouped" and self.topk_groups < G:
            s = scores.reshape(B, G, E // G)
            top2 = min(2, E // G)
            gs = -np.partition(-s, top2 - 1, axis=2)[:, :, :top2]
            gs = np.where(np.isfinite(gs), gs, -1e300).sum(axis=2)
            drop = np.argpartition(gs, G - self.topk_groups - 1, axis=1)[:, :G - self.topk_groups]
            s = s.copy()
            np.put_along_axis(s, drop[:, :, None], -np.inf, axis=1)
            scores = s.reshape(B, E)
        if K == E:
            return np.broadcast_to(np.arange(E), (B, E)).copy()
        return np.argpartition(-scores, K - 1, axis=1)[:, :K]

    def routes(self, num_tokens: int) -> np.ndarray:
        """Expert ids ``[L, B, K]`` chosen by ``num_tokens`` tokens at every layer (distinct per token)."""
        B = int(num_tokens)
        if B < 0:
            raise InputError(f"num_tokens must be >= 0, got {num_tokens}", field="num_tokens")
        out = np.empty((self.L, B, self.top_k), dtype=np.int64)
        bonus = math.log1p(self.affinity * self.E / self.top_k) if self.affinity > 0 else 0.0
        prev = None
        for l in range(self.L):
            scores = self.logp[l][None, :] + self.rng.gumbel(size=(B, self.E))
            if prev is not None and bonus:
                rows = np.repeat(np.arange(B), self.top_k)
                scores[rows, self.next_perm[l - 1][prev.ravel()]] += bonus
            # experts with zero popularity are never picked unless a token must fill its k
            scores = np.where(np.isfinite(scores), scores, -1e300)
            prev = self._topk(scores)
            out[l] = prev
        if self.drift > 0:
            self.logp = self.logp + self.rng.normal(0.0, self.drift, size=self.logp.shape)
        return out

    def sample(self, num_tokens: int) -> np.ndarray:
        """Tokens per expert ``[L, E]`` (int64) for one step of ``num_tokens`` tokens."""
        r = self.routes(num_tokens)
        flat = (r + (np.arange(self.L) * self.E)[:, None, None]).ravel()
        return np.bincount(flat, minlength=self.L * self.E).reshape(self.L, self.E)
