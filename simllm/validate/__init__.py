"""``simllm validate``: replay a measured serving run through the simulator and report the error.

:mod:`.measured` reads runs (inference-perf run folders, ``vllm bench serve --save-result`` JSON);
:mod:`.replay` builds the run's scenario, simulates it and compares.
"""

from .measured import MeasuredRun, read_run
from .replay import simulate_run, validate_run, summarize_runs

__all__ = ["MeasuredRun", "read_run", "simulate_run", "validate_run", "summarize_runs"]
