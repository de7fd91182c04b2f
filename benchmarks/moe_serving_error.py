"""The serving step's MoE layer against the measured fused-MoE tables.

    python benchmarks/moe_serving_error.py [--gpu h100_sxm] [--framework vllm] [--dtype bfloat16]

For every AIConfigurator ``moe_perf`` row with expert parallelism 1 and balanced routing (the set-up a
tensor-parallel serving replica runs), builds a one-layer MoE model of the row's shape (hidden, expert
intermediate, experts, top-k; non-gated where the tables' Nemotron-H shapes are) and prices its routed experts
the way the serving step does (:meth:`simllm.cost.ops.LayerOps.moe_ffn_block`, uniform routing, no hot L2),
at the row's token count and ``moe_tp_size`` as tp. Prints median / p90 |serving / measured - 1| per (GPU,
framework, dtype) and by token-count range, and one JSON line. The fit figures of the kernel model itself are
``benchmarks/cost_model_error.py``'s; this is what a simulation sees.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simllm.config import validate  # noqa: E402
from simllm.cost import make_step_cost, tables  # noqa: E402
from simllm.cost.moe_layer import NONGATED_SHAPES  # noqa: E402
from simllm.hardware import load_accelerator, load_node  # noqa: E402
from simllm.model import ModelSpec  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "calibration" / "aiconfigurator"
GPUS = {"a100_sxm": ("a100-sxm-80gb", "dgx-a100"), "h100_sxm": ("h100-sxm", "dgx-h100"), "l40s": ("l40s", None)}
DTYPES = {"bfloat16": "bf16", "fp8": "fp8"}
BINS = [0, 8, 64, 512, 4096, 1e9]


def _model(H, I, E, k, gated):
    return validate(ModelSpec, {
        "name": f"moe-{H}-{I}-{E}-{k}", "source": "AIConfigurator moe_perf shape", "num_layers": 1,
        "hidden_size": H, "vocab_size": 32000, "max_position_embeddings": 4096,
        "attention": {"kind": "gqa", "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
        "ffn": {"intermediate_size": I, "gated": gated},
        "moe": {"num_experts": E, "top_k": k, "expert_intermediate_size": I}})


def errors(gpu: str, fw: str, dtype: str):
    hw, node = GPUS[gpu]
    acc = load_accelerator(hw)
    nd = load_node(node) if node else None
    df = tables.read_tables(DATA / gpu / "moe" / fw, fw)
    df = df[(df.kind == "moe") & (df.dtype == dtype) & (df.moe_ep_size == 1) & (df.distribution == "balanced")]
    out = []
    for (H, I, E, k), g in df.groupby(["hidden_size", "inter_size", "num_experts", "topk"]):
        H, I, E, k = int(H), int(I), int(E), int(k)
        m = _model(H, I, E, k, (H, I, k, E) not in NONGATED_SHAPES)
        for tp, rows in g.groupby("moe_tp_size"):
            tp = int(tp)
            if nd is not None and tp > nd.devices or nd is None and tp > 1 or I % tp:
                continue
            cost = make_step_cost(m, acc, tp=tp, node=nd, framework=fw, weight_dtype=DTYPES[dtype],
                                  act_dtype=DTYPES[dtype])
            for T, meas in rows.groupby("num_tokens").latency_s.median().items():
                ops = cost.ops.moe_ffn_block(int(T))
                t = sum(o.time_s for o in ops if o.name.startswith("experts") or o.name in
                        ("moe_fixed", "permute_unpermute", "topk_softmax"))
                out.append((T, t / meas - 1))
    return np.array(out) if out else np.zeros((0, 2))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", choices=sorted(GPUS))
    ap.add_argument("--framework", choices=["vllm", "sglang", "trtllm"])
    ap.add_argument("--dtype", choices=sorted(DTYPES))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = {}
    for gpu in [a.gpu] if a.gpu else GPUS:
        for fw in [a.framework] if a.framework else ("vllm", "sglang", "trtllm"):
            for dt in [a.dtype] if a.dtype else DTYPES:
                e = errors(gpu, fw, dt)
                if not len(e):
                    continue
                ae = np.abs(e[:, 1])
                by = {}
                for lo, hi in zip(BINS[:-1], BINS[1:]):
                    s = (e[:, 0] > lo) & (e[:, 0] <= hi)
                    if s.any():
                        by[f"{int(lo) + 1}-{int(hi) if hi < 1e9 else 'inf'}"] = round(float(np.median(e[s, 1])), 4)
                res[f"{gpu}/{fw}/{dt}"] = {"n": int(len(e)), "median": float(np.median(ae)),
                                           "p90": float(np.quantile(ae, 0.9)),
                                           "median_signed": float(np.median(e[:, 1])), "median_signed_by_tokens": by}
                r = res[f"{gpu}/{fw}/{dt}"]
                print(f"{gpu:9s} {fw:7s} {dt:9s} n={r['n']:5d} median {r['median']:.3f} p90 {r['p90']:.3f} "
                      f"signed {r['median_signed']:+.3f}  by tokens {by}", flush=True)
    out = {"benchmark": "moe_serving_error", "groups": res, "wall_s": time.perf_counter() - t0}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
