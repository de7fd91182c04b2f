"""Speculative decoding: its configuration and the acceptance arithmetic (no simulation, no cost model).

A scenario says::

    deployment:
      speculative: {method: mtp, num_tokens: 1, acceptance: 0.87}
      # or {method: draft, draft: llama-3-8b, num_tokens: 4, acceptance: [0.8, 0.75, 0.7, 0.65]}

Each decode iteration of a sequence proposes ``k = num_tokens`` draft tokens (DeepSeek-V3's
multi-token-prediction module, ``mtp``, or a smaller ``draft`` model named like any model
descriptor), then the target model verifies them in one forward pass over ``k + 1`` query tokens
per sequence. ``acceptance[i]`` is the probability that draft token ``i`` is accepted *given* that
tokens ``0 .. i-1`` were (a scalar means the same value at every position). Verification stops at
the first rejection and always emits one more token from the target's own distribution (the
corrected token, or the bonus token when all ``k`` drafts pass), so a verification step emits

    1 + accepted,   E[accepted] = sum_{i<k} prod_{j<=i} acceptance[j]      (:func:`expected_accepted`)

tokens, never more than the request still has to generate (the simulator caps it).

Published figure used for the default in the shipped examples: DeepSeek-V3 technical report
(arXiv:2412.19437, section 5.4.3, "Multi-Token Prediction Evaluation"): "the acceptance rate of the
second token prediction ranges between 85% and 90%", giving 1.8x tokens per second; their MTP
module is one Transformer block with the shared embedding and output head (section 2.2). With
``k > 1`` the one module is run ``k`` times autoregressively (as SGLang does with
``--speculative-num-steps``); acceptances beyond the first position are the user's to give.

Interface used by the engine (``simllm.sim``) and the cost model (``simllm.cost.spec_step``):

- :class:`SpeculativeSpec`: the validated block (``method``, ``num_tokens``, ``acceptance``,
  ``draft``, ``mtp_layers``); :meth:`SpeculativeSpec.acceptance_vector` gives the ``k``
  per-position probabilities as a numpy array.
- :func:`expected_accepted` / :func:`expected_tokens_per_step`: the closed form above.
- :class:`AcceptanceSampler`: ``accepted(rids, positions) -> int array`` of accepted draft tokens
  per sequence, a pure function of ``(seed, request id, output position, draft index)`` through a
  counter-based hash. The same sequence at the same output position always gets the same outcome,
  so a run is reproducible from its seed and independent of how the engine groups steps (jumping
  over several decode steps or stepping one at a time gives the same tokens).
"""

from __future__ import annotations

from typing import Literal, Optional, Union

import numpy as np
from pydantic import Field, field_validator, model_validator

from .config import Frozen

METHODS = ("mtp", "draft")


class SpeculativeSpec(Frozen):
    """``deployment.speculative``: speculative decoding of every decoding pool of the deployment."""

    method: Literal["mtp", "draft"]
    num_tokens: int = Field(ge=1, le=64)  # draft tokens proposed per sequence per decode step (k)
    acceptance: Union[float, list[float]]  # per-position conditional acceptance, or one value for all
    draft: Optional[str] = None  # method draft: the draft model (a name under workloads/models/ or a path)
    draft_tp: Optional[int] = Field(default=None, gt=0)  # draft model's tensor parallelism (default: the pool's tp)
    mtp_layers: int = Field(default=1, ge=1)  # method mtp: Transformer blocks of the MTP module (DeepSeek-V3: 1)

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v):
        if v not in METHODS:
            raise ValueError(f"unknown speculative method {v!r}; known: {', '.join(METHODS)}")
        return v

    @field_validator("acceptance", mode="before")
    @classmethod
    def _acc(cls, v):
        vals = v if isinstance(v, (list, tuple)) else [v]
        if not vals:
            raise ValueError("give at least one acceptance probability")
        for i, a in enumerate(vals):
            if isinstance(a, bool) or not isinstance(a, (int, float)):
                raise ValueError(f"acceptance probabilities are numbers in [0, 1], got {a!r}")
            if not 0.0 <= float(a) <= 1.0:
                where = f" (position {i})" if isinstance(v, (list, tuple)) else ""
                raise ValueError(f"acceptance {a}{where} is a probability: it must be in [0, 1]")
        return [float(a) for a in v] if isinstance(v, (list, tuple)) else float(v)

    @model_validator(mode="after")
    def _shape(self):
        if isinstance(self.acceptance, list) and len(self.acceptance) != self.num_tokens:
            raise ValueError(f"acceptance lists {len(self.acceptance)} positions, num_tokens is {self.num_tokens}; "
                             f"give one probability per draft token or a single number")
        if self.method == "draft" and not self.draft:
            raise ValueError("method draft needs the draft model: draft: MODEL (a name or a descriptor path)")
        if self.method == "mtp" and (self.draft or self.draft_tp):
            raise ValueError("draft and draft_tp apply to method draft; mtp uses the model's own MTP module")
        if self.method == "draft" and "mtp_layers" in self.model_fields_set:
            raise ValueError("mtp_layers applies to method mtp")
        return self

    def acceptance_vector(self) -> np.ndarray:
        a = self.acceptance
        return np.asarray(a if isinstance(a, list) else [a] * self.num_tokens, dtype=np.float64)


def expected_accepted(acceptance) -> float:
    """Expected accepted draft tokens per verification: sum over i of prod_{j<=i} a_j."""
    return float(np.cumprod(np.asarray(acceptance, dtype=np.float64)).sum())


def expected_tokens_per_step(acceptance) -> float:
    """Expected tokens one verification step emits per sequence (accepted drafts + the target's token),
    before the cap at the tokens a request has left."""
    return 1.0 + expected_accepted(acceptance)


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (uint64 arithmetic wraps modulo 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


class AcceptanceSampler:
    """Accepted draft tokens per sequence and step, reproducible from ``seed``.

    ``accepted(rids, positions)``: for each sequence (request id, output tokens generated before
    this step) the number of leading draft tokens accepted, in ``0 .. k``. Draft ``i`` passes when
    ``u(seed, rid, position, i) < acceptance[i]`` with ``u`` uniform on [0, 1) from a counter-based
    hash, and only while every draft before it passed."""

    def __init__(self, acceptance, seed: int = 0):
        self.a = np.asarray(acceptance, dtype=np.float64)
        self.k = len(self.a)
        with np.errstate(over="ignore"):
            self._s = _mix(np.asarray([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) ^ np.uint64(0x5BEC))[0]
        self._i = np.arange(self.k, dtype=np.uint64)

    def uniforms(self, rids, positions) -> np.ndarray:
        """(n, k) uniforms on [0, 1) for these sequences at these output positions."""
        r = np.asarray(rids, dtype=np.int64).astype(np.uint64)
        p = np.asarray(positions, dtype=np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = _mix(self._s ^ (r * _GOLD))
            h = _mix(h ^ (p * _M1))
            h = _mix(h[:, None] ^ ((self._i + np.uint64(1)) * _M2))
        return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)

    def accepted(self, rids, positions) -> np.ndarray:
        ok = self.uniforms(rids, positions) < self.a
        return np.cumprod(ok, axis=1).sum(axis=1).astype(np.int64)
