"""Refit the GEMM sections (``gemm/<dtype>[/<family>]``) of one shipped calibration, framework and dtype.

    python benchmarks/gemm_refit.py GPU DEVICE FRAMEWORK DTYPE [--dispatch NAME] [--rows N] [--write]
    python benchmarks/gemm_refit.py l40s l40s vllm fp8 --dispatch cutlass_sm89_fp8 --write

Fits :func:`simllm.cost.kernel_models.fit_gemm_kind` on the framework's newest gemm tables of ``../shared/data``
(seeded subsample of ``--rows`` per dtype and kernel family), from the shipped section; ``--dispatch`` prices the
sections with a library's own tile choice by shape (:data:`simllm.cost.kernels.GEMM_DISPATCH`) instead of the best
of their tiles. A refitted section is kept only where it lowers the mean |log(pred / measured)| over all of its
rows; prints the ``calibrate check`` figures (median / p90) before and after. ``--write`` puts the kept sections in
``frameworks.<F>.kernels`` (and the top-level ``kernels`` for vLLM), the figures in ``frameworks.<F>.fit.per_op``
and a note in ``fit.gemm_<F>_<DTYPE>_refit``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simllm.cost import kernel_models as km, pricing  # noqa: E402
from simllm.cost.kernels import GEMM_DISPATCH  # noqa: E402

from _calibration_yaml import refit_and_keep, refit_setup  # noqa: E402


def main(argv=None) -> dict:
    a, acc, cal, df, t0 = refit_setup(__doc__, argv, "gemm", "gemm", [
        (("dtype",), {}), (("--dispatch",), {"choices": sorted(GEMM_DISPATCH), "default": None}),
        (("--rows",), {"type": int, "default": 5000}), (("--iters",), {"type": int, "default": 1500})])
    df = df[df["dtype"].astype(str) == a.dtype]
    if df.empty:
        print(f"no {a.dtype} gemm rows for {a.framework} of {a.gpu}", file=sys.stderr)
        raise SystemExit(2)
    new = km.fit_gemm_kind(df, acc, cal, iters=a.iters, max_rows=a.rows, dispatch=a.dispatch)
    srcs = np.full(len(df), "", dtype=object)  # each row's kernel family (km._gemm_groups: GEMV paths split off)
    for _d, src, m in km._gemm_groups(df):
        srcs[m] = src

    def rows(name):
        parts = name.split("/", 2)  # a kernel source may hold slashes (TRT-LLM's plugin names)
        return (srcs == parts[2]) if len(parts) > 2 else np.ones(len(df), bool)

    return refit_and_keep(df=df, cal=cal, acc=acc, kind="gemm", new=new, price=lambda f, c: pricing.price(f, acc, c),
                          section_rows=rows, gpu=a.gpu, framework=a.framework, device=a.device, write=a.write,
                          note_key=f"gemm_{a.framework}_{a.dtype}_refit", tables=f"{a.gpu}/gemm/{a.framework} (newest), "
                          f"{a.dtype}", note="refit by benchmarks/gemm_refit.py" +
                          (f" with the {a.dispatch} tile dispatch" if a.dispatch else "") +
                          ": sections kept where they lower the mean |log error| over their rows; per_op figures of "
                          "calibrate check", t0=t0, extra={"dtype": a.dtype, "dispatch": a.dispatch})


if __name__ == "__main__":
    main()
