"""Workloads: request streams from real traces and synthetic generators.

- :mod:`.readers`: BurstGPT, Azure, Mooncake and Vidur trace formats -> :class:`Trace`.
- :mod:`.transforms`: time window, request limit, rate scaling, re-timing.
- :mod:`.generators`: Poisson / Gamma (bursty, time-varying) arrivals; lognormal, Zipf and
  empirical lengths.
- :mod:`.spec`: the scenario's ``workload:`` block (:class:`WorkloadSpec`) and
  :func:`build_workload`; closed-loop :class:`SessionWorkload`.
- :mod:`.stats`: trace statistics, fitted generator parameters, BurstGPT CSV writer.
"""

from .readers import FORMATS, Trace, detect_format, read_trace
from .request import Request, RequestTable
from .spec import Session, SessionTurn, SessionWorkload, WorkloadSpec, build_workload

__all__ = [
    "FORMATS",
    "Request",
    "RequestTable",
    "Session",
    "SessionTurn",
    "SessionWorkload",
    "Trace",
    "WorkloadSpec",
    "build_workload",
    "detect_format",
    "read_trace",
]
