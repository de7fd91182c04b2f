"""The step cost model of one replica (tensor- and pipeline-parallel), for the simulator.

A step's time is assembled from a few aggregates (``simllm.cost.interface``):

* the token-dependent part (every GEMM, norm, activation, residual add, TP all-reduce,
  embedding, pipeline send) is a function of ``T = prefill_tokens + decode_seqs`` only; it is
  computed once per distinct ``T`` from the operator lists of :mod:`simllm.cost.ops` and
  memoized (tokens are integers; a serving run sees a few thousand distinct values);
* the LM head depends on the sequences sampled, ``S = prefill_seqs + decode_seqs`` (memoized);
* prefill attention on ``prefill_tokens``, ``prefill_attn_work`` and ``prefill_seqs``, decode
  attention on ``decode_seqs`` and ``decode_ctx_tokens`` (an array of contexts is priced in one
  numpy expression): the kernel physics of :mod:`simllm.cost.kernel_models` (floors, waves, CTA
  occupancy, split-KV) through :mod:`simllm.cost.layer_kernels`, in plain floats for a scalar.

GEMMs and attention use the device's calibration for ``framework`` (default vLLM); every
kernel's launch is kept apart from its body (``StepCost.overhead_s``).

Pipeline parallelism: layers are split over ``pp`` stages as evenly as possible (the first
stage also embeds, the last also runs the LM head); each stage but the last sends its
activations to the next. In steady state a pipeline admits a new micro-batch every *slowest
stage time*, so ``step_time`` returns ``max over stages`` (the throughput-relevant interval of
one iteration of this replica); :meth:`ReplicaStepCost.pipeline_latency` gives the time one
micro-batch takes through all stages (the sum), which bounds a single request's latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import InputError
from . import collectives as C
from .calibration import Calibration, calibration_for
from .interface import BatchShape, StepCost
from .ops import LayerOps, Op, total

_FIELDS = ("time_s", "compute_s", "memory_s", "comm_s", "overhead_s", "flops", "bytes")


def _vec(ops) -> np.ndarray:
    t = total(ops)
    return np.array([t.time_s, t.compute_s, t.memory_s, t.comm_s, t.overhead_s, t.flops, t.bytes])


@dataclass(frozen=True)
class Stage:
    index: int
    n_dense: int
    n_moe: int
    first: bool
    last: bool

    @property
    def n_layers(self) -> int:
        return self.n_dense + self.n_moe


def split_stages(model, pp: int) -> list[Stage]:
    if pp < 1:
        raise InputError(f"pp must be >= 1, got {pp}", field="pp")
    L = model.num_layers
    if pp > L:
        raise InputError(f"pp {pp} exceeds the model's {L} layers", field="pp")
    bounds = np.linspace(0, L, pp + 1).round().astype(int)
    out = []
    for i in range(pp):
        layers = range(bounds[i], bounds[i + 1])
        moe = sum(model.is_moe_layer(j) for j in layers)
        out.append(Stage(i, len(layers) - moe, moe, i == 0, i == pp - 1))
    return out


class ReplicaStepCost:
    """:class:`~simllm.cost.interface.StepCostModel` of one replica."""

    def __init__(self, model, accelerator, *, tp: int = 1, pp: int = 1, node=None, weight_dtype: str = "bf16",
                 kv_dtype: str = "bf16", act_dtype: str = "bf16", calibration=None, framework: str = "vllm"):
        self.model, self.acc, self.tp, self.pp, self.node = model, accelerator, int(tp), int(pp), node
        if self.tp < 1:
            raise InputError(f"tp must be >= 1, got {tp}", field="tp")
        self.cal: Calibration = calibration_for(accelerator, calibration)
        if node is None and (self.tp > 1 or self.pp > 1):
            from .fit import default_node_for

            node = default_node_for(accelerator)
            self.node = node
        self.links = C.CommLinks.from_node(node, self.cal.comm) if node is not None else None
        if node is not None and self.tp > node.devices and self.tp % node.devices:
            raise InputError(f"tp {tp} spans nodes unevenly ({node.devices} devices per node)", field="tp")
        self.ops = LayerOps(model, accelerator, tp=self.tp, cal=self.cal, links=self.links,
                            weight_dtype=weight_dtype, kv_dtype=kv_dtype, act_dtype=act_dtype, framework=framework)
        self.stages = split_stages(model, self.pp)
        self.has_moe = model.moe is not None and model.num_moe_layers > 0
        # pipeline hop: within a node while the replica's devices fit in it
        self.pp_cross_node = node is not None and self.tp * self.pp > node.devices
        self._n_layers = np.array([s.n_layers for s in self.stages], dtype=float)
        self._n_list = self._n_layers.tolist()
        self._tok: dict[int, np.ndarray] = {}  # T -> (pp, 7) token-dependent breakdown
        self._dconst: dict = {}  # decode_step_times: batch size -> its constants
        self._head: dict[int, np.ndarray] = {}
        self._last = self.pp - 1

    # ------------------------------------------------------------------ memoized parts
    def _token_part(self, T: int) -> np.ndarray:
        v = self._tok.get(T)
        if v is None:
            o = self.ops
            dense = _vec(o.attention_block(T) + o.dense_ffn_block(T)) if any(s.n_dense for s in self.stages) else 0
            moe = _vec(o.attention_block(T) + o.moe_ffn_block(T)) if self.has_moe else 0
            emb = _vec(o.embedding(T))
            send = self._send(T)
            rows = []
            for s in self.stages:
                r = s.n_dense * dense + s.n_moe * moe + (emb if s.first else 0) + (0 if s.last else send)
                rows.append(np.asarray(r, dtype=float) * np.ones(7))
            v = np.array(rows)
            if len(self._tok) < 200_000:
                self._tok[T] = v
        return v

    def _send(self, T: int) -> np.ndarray:
        nbytes = T * self.model.hidden_size * self.ops.ab / self.tp  # each TP rank sends its slice
        if self.pp <= 1 or nbytes <= 0:
            return np.zeros(7)
        t = C.p2p(nbytes, self.links, cross_node=self.pp_cross_node)
        return np.array([t, 0, 0, t, 0, 0, nbytes])

    def _head_part(self, S: int) -> np.ndarray:
        v = self._head.get(S)
        if v is None:
            v = _vec(self.ops.lm_head(S)) if S > 0 else np.zeros(7)
            if len(self._head) < 200_000:
                self._head[S] = v
        return v

    def _attn(self, prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens, ctx_max=None):
        """Per-layer attention seconds (prefill + decode); an array when ``decode_ctx_tokens`` is one."""
        o = self.ops
        a = o.prefill_attention_time(prefill_tokens, prefill_attn_work, prefill_seqs) \
            if (prefill_tokens > 0 or prefill_attn_work > 0) else 0.0
        if decode_seqs > 0:
            return a + o.decode_attention_time(decode_seqs, decode_ctx_tokens, ctx_max)
        if isinstance(decode_ctx_tokens, np.ndarray):
            return np.full(decode_ctx_tokens.shape, a)
        return a

    # ------------------------------------------------------------------ StepCostModel
    takes_ctx_max = True  # step_time accepts the batch's longest decode context (see step_time)

    def step_time(self, prefill_tokens: int, prefill_attn_work: float, prefill_seqs: int, decode_seqs: int,
                  decode_ctx_tokens, decode_ctx_max=None):
        """Seconds of one iteration (slowest pipeline stage); vectorised over ``decode_ctx_tokens``.
        ``decode_ctx_max``: the longest decode context (of ``decode_ctx_tokens``' shape), whose excess over
        the mean paces decode attention (``kernel_models.decode_tail_share``); None: equal lengths."""
        T = int(prefill_tokens) + int(decode_seqs)
        S = int(prefill_seqs) + int(decode_seqs)
        if T <= 0 and prefill_attn_work <= 0:  # an empty step costs nothing
            if isinstance(decode_ctx_tokens, np.ndarray):
                return np.zeros(decode_ctx_tokens.shape)
            return 0.0
        tok = self._tok.get(T)
        if tok is None:
            tok = self._token_part(T)
        head = self._head.get(S)
        if head is None:
            head = self._head_part(S)
        a = self._attn(prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens, decode_ctx_max)
        if self.pp == 1:
            v = tok[0, 0] + head[0] + self._n_list[0] * a
            return v if isinstance(v, np.ndarray) else float(v)
        if not isinstance(a, np.ndarray):  # plain floats: a few stages, no numpy overhead
            best = -1.0
            for i, (t_i, n_i) in enumerate(zip(tok[:, 0].tolist(), self._n_list)):
                v = t_i + n_i * a + (head[0] if i == self._last else 0.0)
                best = v if v > best else best
            return float(best)
        v = tok[:, 0][:, None] + self._n_layers[:, None] * a.reshape(1, -1)  # the scalar loop's order
        v[self._last] += head[0]
        return np.max(v, axis=0).reshape(a.shape)

    def decode_step_times(self, decode_seqs: int, ctxs: list, ctx_maxs: Optional[list] = None) -> Optional[list]:
        """:meth:`step_time` of decode-only steps of ``decode_seqs`` sequences, one per context total in ``ctxs``
        (and longest context in ``ctx_maxs``, if given), as plain floats equal bit for bit to
        ``step_time(0, 0.0, 0, decode_seqs, np.array(ctxs), np.array(ctx_maxs))`` (a simulator pricing a few
        steps at a time skips numpy's per-call overhead); None where that form is not offered (pipeline stages)."""
        n = int(decode_seqs)
        dc = self._dconst.get(n)
        if dc is None:  # per batch size: the token and head parts, the layers, the tail share (plain floats)
            if self.pp != 1 or n <= 0 or self.ops.win_share:  # sliding windows: step_time's layer average
                return None
            tok = self._tok.get(n)
            if tok is None:
                tok = self._token_part(n)
            head = self._head.get(n)
            if head is None:
                head = self._head_part(n)
            dc = self._dconst[n] = (float(tok[0, 0] + head[0]), self._n_list[0], self.ops.k.decode_tail(n))
        c, nl, f = dc
        if ctx_maxs is not None:
            ctxs = [x + f * (n * m - x) for x, m in zip(ctxs, ctx_maxs)]
        return [c + nl * a for a in self.ops.k.decode_times(n, ctxs)]

    def stage_times(self, shape: BatchShape) -> np.ndarray:
        """Seconds of each pipeline stage for one batch."""
        T = shape.prefill_tokens + shape.decode_seqs
        S = shape.prefill_seqs + shape.decode_seqs
        tok = self._token_part(T)[:, 0]
        a = float(self._attn(shape.prefill_tokens, shape.prefill_attn_work, shape.prefill_seqs, shape.decode_seqs,
                             float(shape.decode_ctx_tokens)))
        out = tok + self._n_layers * a
        out[self._last] += self._head_part(S)[0]
        return out

    def pipeline_latency(self, shape: BatchShape) -> float:
        """Seconds for one micro-batch to pass all stages (sum of stage times)."""
        return float(np.sum(self.stage_times(shape)))

    def step_cost(self, shape: BatchShape) -> StepCost:
        """Breakdown of the slowest stage; ``total_s`` equals :meth:`step_time` of equal decode lengths
        (``BatchShape`` has no longest context: a mixed-length step's duration can exceed it)."""
        total_s = float(self.step_time(shape.prefill_tokens, shape.prefill_attn_work, shape.prefill_seqs,
                                       shape.decode_seqs, float(shape.decode_ctx_tokens)))
        i = int(np.argmax(self.stage_times(shape))) if self.pp > 1 else 0
        T = shape.prefill_tokens + shape.decode_seqs
        v = self._token_part(T)[i].tolist()  # plain floats: the same elementwise sums as numpy's, faster
        if self.stages[i].last:
            v = [x + y for x, y in zip(v, self._head_part(shape.prefill_seqs + shape.decode_seqs).tolist())]
        n = self.stages[i].n_layers
        for op in (self.ops.prefill_attention(shape.prefill_tokens, shape.prefill_attn_work, shape.prefill_seqs),
                   self.ops.decode_attention(shape.decode_seqs, shape.decode_ctx_tokens)):
            v = [x + n * y for x, y in zip(v, (op.time_s, op.compute_s, op.memory_s, op.comm_s, op.overhead_s,
                                                op.flops, op.bytes))]
        return StepCost(total_s=total_s, compute_s=v[1], memory_s=v[2], comm_s=v[3], overhead_s=v[4], flops=v[5],
                        bytes=v[6])

    # ------------------------------------------------------------------ memory
    @property
    def weight_bytes_per_device(self) -> float:
        """Weights on the most loaded device (the largest pipeline stage)."""
        o = self.ops
        best = 0.0
        for s in self.stages:
            w = (s.n_dense * o.layer_weight_bytes(False) if s.n_dense else 0.0) + \
                (s.n_moe * o.layer_weight_bytes(True) if s.n_moe else 0.0)
            if s.first:
                w += o.embedding_weight_bytes()
            if s.last:
                w += o.lm_head_weight_bytes() + self.model.hidden_size * o.wb
            best = max(best, w)
        return float(best)

    @property
    def kv_bytes_per_token_per_device(self) -> float:
        """KV-cache bytes one token of context costs on one device (layers of the largest stage)."""
        return float(self.ops.kv_per_tok * max(s.n_layers for s in self.stages))

    def moe_layer_time(self, tokens: int, expert_tokens=None) -> float:
        """Seconds of one MoE layer's FFN block for ``tokens`` tokens on one device, with explicit
        per-expert token counts (e.g. from ``simllm.placement``) or uniform routing by default."""
        if not self.has_moe:
            raise InputError(f"{self.model.name} has no MoE layers")
        return float(sum(o.time_s for o in self.ops.moe_ffn_block(tokens, expert_tokens)))

    # ------------------------------------------------------------------ explain
    def layer_ops(self, moe: bool, shape: BatchShape) -> list[Op]:
        o = self.ops
        T = shape.prefill_tokens + shape.decode_seqs
        ops = o.attention_block(T)
        ops.insert(-2, o.prefill_attention(shape.prefill_tokens, shape.prefill_attn_work, shape.prefill_seqs))
        ops.insert(-2, o.decode_attention(shape.decode_seqs, shape.decode_ctx_tokens))
        ops = [x for x in ops if x.time_s > 0 or x.kind not in ("attention", "comm")]
        return ops + (o.moe_ffn_block(T) if moe else o.dense_ffn_block(T))


def make_step_cost(model, accelerator, *, tp: int = 1, pp: int = 1, node=None, weight_dtype: str = "bf16",
                   kv_dtype: str = "bf16", act_dtype: str = "bf16", calibration=None,
                   framework: str = "vllm") -> ReplicaStepCost:
    """The cost model of one replica of ``model`` on ``accelerator`` with ``tp`` x ``pp`` devices.

    ``node`` provides the links for TP all-reduces and PP sends (default: the first node
    descriptor built from this accelerator). ``calibration``: a :class:`Calibration`, a file, or
    None for the device's own file / the A100 reference transferred by principle. ``framework``:
    whose kernel calibration prices GEMMs and attention (vllm, trtllm, sglang)."""
    return ReplicaStepCost(model, accelerator, tp=tp, pp=pp, node=node, weight_dtype=weight_dtype,
                           kv_dtype=kv_dtype, act_dtype=act_dtype, calibration=calibration, framework=framework)
