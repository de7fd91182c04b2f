"""Refit the fused-MoE kernel sections (``moe/<dtype>[/<family>]``) of one shipped calibration and framework.

    python benchmarks/moe_refit.py GPU DEVICE FRAMEWORK [--rows N] [--iters N] [--write]
    python benchmarks/moe_refit.py h100_sxm h100-sxm vllm --write

Fits :func:`simllm.cost.moe_layer.fit_frame` (seeded subsample of ``--rows`` per dtype and kernel family) on
the framework's newest moe tables of ``../shared/data`` (starting from the shipped section), keeps a refitted
section only where it lowers the mean |log(pred / measured)| over all of that section's rows, and prints the
``calibrate check`` figures (median / p90 per dtype) before and after. ``--write`` puts the kept sections in
``frameworks.<F>.kernels`` (and the top-level ``kernels`` for vLLM, whose sections they are), the new figures
in ``frameworks.<F>.fit.per_op`` and a note in ``fit.moe_<F>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simllm.cost import moe_layer as M  # noqa: E402

from _calibration_yaml import refit_and_keep, refit_setup  # noqa: E402


def main(argv=None) -> dict:
    a, acc, cal, df, t0 = refit_setup(__doc__, argv, "moe", "moe", [(("--rows",), {"type": int, "default": 600}),
                                                                   (("--iters",), {"type": int, "default": 300})])
    new = M.fit_frame(df, acc, cal, max_rows=a.rows, iters=a.iters)
    dts = df["dtype"].astype(str).to_numpy()
    srcs = np.array([M.source_key(v) for v in df["kernel_source"].astype(str)], dtype=object)

    def rows(name):
        parts = name.split("/")
        return (dts == parts[1]) & ((srcs == parts[2]) if len(parts) > 2 else True)

    return refit_and_keep(df=df, cal=cal, acc=acc, kind="moe", new=new, price=lambda f, c: M.price_frame(f, acc, c),
                          section_rows=rows, gpu=a.gpu, framework=a.framework, device=a.device, write=a.write,
                          note_key=f"moe_{a.framework}", tables=f"{a.gpu}/moe/{a.framework} (newest)",
                          note="refit with the per-expert term (expert_s) by benchmarks/moe_refit.py: sections kept "
                               "where they lower the mean |log error| over their rows; per_op figures of calibrate "
                               "check", t0=t0)


if __name__ == "__main__":
    main()
