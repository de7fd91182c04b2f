"""A100 all_reduce and send_recv through the topology vs Vidur's measurements (DGX A100).

``/work/shared/data/calibration/vidur-a100/a100_dgx_{all_reduce,send_recv}.csv``: median times by
size, workers and devices per node (rows with fewer devices per node than workers cross nodes).
Each row is predicted by :func:`simllm.topology.collective` / :func:`send_recv` on the
``a100-2node`` cluster with the ranks the measurement used (``g`` devices on each of ``k`` nodes);
the formulas and their calibration are the cost model's (``simllm.cost.collectives``).
"""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")


def _calibrated() -> bool:
    """The cost model's A100 calibration file (written by ``simllm calibrate``) is in the tree."""
    try:
        from simllm.config import data_root
        from simllm.cost.calibration import CALIB_DIR, REFERENCE
    except ImportError:
        return False
    return (data_root() / CALIB_DIR / REFERENCE).is_file()


def _errors(shared_data, step=5):
    from simllm.topology import collective, send_recv, with_nodes

    base = shared_data / "calibration" / "vidur-a100"
    topos = {k: with_nodes("a100-2node", k) for k in (1, 2)}  # calibration: the A100 file
    out = {}
    for fname, op in (("a100_dgx_all_reduce.csv", "all_reduce"), ("a100_dgx_send_recv.csv", "send_recv")):
        d = pd.read_csv(base / fname)
        col = f"time_stats.{op}.median"
        for (n, g), grp in d.groupby(["num_workers", "devices_per_node"]):
            k = n // g
            ranks = [node * 8 + i for node in range(k) for i in range(g)]
            grp = grp.sort_values("size").iloc[::step]
            errs = []
            for size, ms in zip(grp["size"], grp[col]):
                if op == "send_recv":
                    e = send_recv(topos[k], float(size), ranks[0], ranks[-1])
                else:
                    e = collective(topos[k], op, float(size), ranks=ranks)
                errs.append(abs(e.time_s - ms * 1e-3) / (ms * 1e-3))
            out[(op, n, g)] = np.array(errs)
    return out


@pytest.mark.skipif(not _calibrated(), reason="needs the cost model's A100 calibration file "
                    "(hardware/calibration/a100-sxm-80gb.yaml), not in this tree yet")
def test_a100_all_reduce_and_send_recv_median_error(shared_data):
    errs = _errors(shared_data)
    pooled = np.concatenate(list(errs.values()))
    intra = np.concatenate([v for (op, n, g), v in errs.items() if n == g])
    inter = np.concatenate([v for (op, n, g), v in errs.items() if n != g])
    msg = {f"{k}": round(float(np.median(v)), 3) for k, v in errs.items()}
    assert np.median(pooled) <= 0.15, msg
    assert np.median(intra) <= 0.15, msg
    assert np.median(inter) <= 0.15, msg
