"""Vidur's collective tables (``a100_dgx_all_reduce.csv``, ``a100_dgx_send_recv.csv``) priced by the
link-based collective model of :mod:`simllm.cost.collectives` (as ``simllm.cost.fit`` fits it),
registered as ``vidur:nccl_all_reduce`` / ``vidur:send_recv`` so AIConfigurator NCCL rows go to
whatever pricer owns ``nccl_*``. Rows: ``size`` (bytes), ``num_workers``, ``devices_per_node``."""

from __future__ import annotations

import numpy as np

from .fit import default_node_for, predict_comm
from .pricing import register


def _price(df, acc, cal) -> np.ndarray:
    node = default_node_for(acc)
    rows = {"size": df["size"].to_numpy(float), "n": df["num_workers"].to_numpy(int),
            "g": df["devices_per_node"].to_numpy(int), "t": df["latency_s"].to_numpy(float),
            "op": np.where(df["kind"].astype(str).to_numpy() == "send_recv", "send_recv", "all_reduce")}
    return predict_comm(rows, node, cal)


register("vidur:nccl_all_reduce", _price)
register("vidur:send_recv", _price)
