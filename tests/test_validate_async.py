"""The client view of vLLM V1's async scheduling in ``simllm validate``: every token of a request one
engine step later (the step in progress at its first token), TPOT unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from simllm.validate.replay import _async_lag, _client_view


def _tables():
    # two rows: one step of 20 ms at t=0, then a jump of 4 steps of 10 ms from t=0.02
    steps = pd.DataFrame({"start_s": [0.0, 0.02], "duration_s": [0.02, 0.04], "n_steps": [1, 4]})
    req = pd.DataFrame({"arrival_s": [0.0, 0.0, 0.0], "ttft_s": [0.015 + 0.005, 0.035 + 0.005, np.nan],
                        "e2e_s": [0.05, 0.06, np.nan], "output_tokens": [4, 4, 4]})
    return req, steps


def test_lag_is_the_step_at_the_first_token():
    req, steps = _tables()
    lag = _async_lag(req, steps, api_overhead_s=0.005)
    assert np.allclose(lag, [0.02, 0.01, 0.0])


def test_lag_shifts_ttft_and_e2e_not_tpot():
    req, steps = _tables()
    stage = np.zeros(3, dtype=int)
    base = _client_view(req, stage, 300.0, 1, 1)[-1]
    lag = _async_lag(req, steps, api_overhead_s=0.005)
    late = _client_view(req, stage, 300.0, 1, 1, lag)[-1]
    assert np.isclose(late["ttft"]["mean"] - base["ttft"]["mean"], 0.015)
    assert np.isclose(late["e2e"]["mean"] - base["e2e"]["mean"], 0.015)
    assert np.isclose(late["tpot"]["mean"], base["tpot"]["mean"])
    assert late["failed"] == base["failed"] == 1
