"""Refit the MLA per-head BMM sections (``mla_bmm/<dtype>``) of one shipped calibration and framework.

    python benchmarks/mla_bmm_refit.py GPU DEVICE FRAMEWORK [--iters N] [--write]
    python benchmarks/mla_bmm_refit.py l40s l40s sglang --write

Fits :func:`simllm.cost.kernel_models.fit_mla_bmm` (the GEMM tile model with ``num_heads`` GEMMs per call, the
collector's single operand copy in L2, the fp8 activation-quantization pass) on the framework's newest mla_bmm
tables of ``../shared/data``, from the shipped section, keeps a refitted section only where it lowers the mean
|log(pred / measured)| over that dtype's rows, and prints the ``calibrate check`` figures (median / p90 per
dtype) before and after. ``--write`` puts the kept sections in ``frameworks.<F>.kernels`` (and the top-level
``kernels`` for vLLM), the new figures in ``frameworks.<F>.fit.per_op`` and a note in ``fit.mla_bmm_<F>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simllm.cost import kernel_models as km  # noqa: E402

from _calibration_yaml import refit_and_keep, refit_setup  # noqa: E402


def main(argv=None) -> dict:
    a, acc, cal, df, t0 = refit_setup(__doc__, argv, "mla_bmm", "mla_bmm",
                                      [(("--iters",), {"type": int, "default": 1500})])
    new = km.fit_mla_bmm(df, acc, cal, iters=a.iters)
    dts = df["dtype"].astype(str).to_numpy()
    return refit_and_keep(df=df, cal=cal, acc=acc, kind="mla_bmm", new=new,
                          price=lambda f, c: km.price_mla_bmm(f, acc, c),
                          section_rows=lambda name: dts == name.split("/")[1], gpu=a.gpu, framework=a.framework,
                          device=a.device, write=a.write, note_key=f"mla_bmm_{a.framework}",
                          tables=f"{a.gpu}/mla_bmm/{a.framework} (newest)",
                          note="refit by benchmarks/mla_bmm_refit.py (heads as GEMMs of one call, the collector's one "
                               "operand copy in L2, the fp8 quantization pass): sections kept where they lower the "
                               "mean |log error| over their rows; per_op figures of calibrate check", t0=t0)


if __name__ == "__main__":
    main()
