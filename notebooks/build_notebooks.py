"""Write the analysis notebooks from the cell sources below (reviewable as plain Python).

    python notebooks/build_notebooks.py        # regenerates notebooks/*.ipynb (no outputs)

Each notebook reads ``SIMLLM_NB_SMALL`` (set by the test suite) to shrink its sizes so that
``tests/test_notebooks.py`` can execute it top to bottom in seconds.
"""

from __future__ import annotations

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent

SETUP = '''import os, sys
from pathlib import Path
import numpy as np, pandas as pd, matplotlib.pyplot as plt
SMALL = os.environ.get("SIMLLM_NB_SMALL") == "1"   # the test suite runs the notebooks small
REPO = Path.cwd() if (Path.cwd() / "pyproject.toml").exists() else Path.cwd().parent
os.chdir(REPO)
%matplotlib inline'''

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["trace_characterisation.ipynb"] = [
    ("md", """# Characterising a BurstGPT-format trace

BurstGPT (HPMLL/BurstGPT) logs `Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type`.
Its published shape: Gamma-distributed, time-varying arrivals (API logs far burstier than conversation
logs), Zipf-like request and response lengths, responses growing with requests.

The shipped `traces/burstgpt_synthetic.csv` is **synthetic** (made by `simllm trace generate` from that
published shape, see `traces/README.md`); point `TRACE` at a real BurstGPT CSV to characterise the real
thing: the reader takes the published format as is."""),
    ("code", SETUP),
    ("code", '''from simllm.workload import read_trace
from simllm.workload.stats import trace_stats, fitted_generator
TRACE = "traces/burstgpt_synthetic.csv"
logs = {lt: read_trace(TRACE, log_type=lt) for lt in ("Conversation log", "API log")}
for lt, tr in logs.items():
    print(f"{lt:17s}: {len(tr):6d} requests over {tr.duration_s/3600:.1f} h, dropped (failed) {tr.dropped}")'''),
    ("md", "## Arrival process: rate, burstiness (coefficient of variation of inter-arrival gaps), Gamma fit"),
    ("code", '''rows = []
for lt, tr in logs.items():
    s = trace_stats(tr.df)
    rows.append({"log type": lt, "requests": s["count"], "rate (req/s)": s["rate_per_s"],
                 "inter-arrival CV": s["interarrival_cv"], "gamma shape": s["fit"]["arrivals"]["shape"],
                 "prompt p50": s["prompt_tokens"]["p50"], "prompt p99": s["prompt_tokens"]["p99"],
                 "output p50": s["output_tokens"]["p50"], "output p99": s["output_tokens"]["p99"],
                 "log-length corr.": s["log_length_correlation"]})
table = pd.DataFrame(rows).set_index("log type"); table.round(3)'''),
    ("code", '''# The published finding: API logs are burstier (higher CV) than conversation logs.
assert table.loc["API log", "inter-arrival CV"] > table.loc["Conversation log", "inter-arrival CV"]'''),
    ("code", '''fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for lt, tr in logs.items():
    t = tr.df.arrival_s.to_numpy()
    window = 600.0
    counts, edges = np.histogram(t, bins=np.arange(0, t.max() + window, window))
    axes[0].plot(edges[:-1] / 3600, counts / window, lw=1, label=lt)
    gaps = np.diff(t); gaps = gaps[gaps > 0]
    axes[1].hist(np.log10(gaps), bins=60, histtype="step", density=True, label=lt)
    for col, ls in (("prompt_tokens", "-"), ("output_tokens", "--")):
        x = np.sort(tr.df[col].to_numpy())[::-1]
        axes[2].loglog(x, np.arange(1, len(x) + 1) / len(x), ls, lw=1, label=f"{lt}, {col.split('_')[0]}")
axes[0].set(xlabel="time (h)", ylabel="request rate (requests/s)", title="Rate over time (10-min bins)")
axes[1].set(xlabel="log10 inter-arrival gap (s)", ylabel="density", title="Inter-arrival gaps")
axes[2].set(xlabel="tokens", ylabel="P(length >= x)", title="Length CCDF (Zipf-like: straight on log-log)")
for ax in axes: ax.grid(alpha=.3); ax.legend(fontsize=7)
fig.tight_layout()'''),
    ("md", "## Response length against request length"),
    ("code", '''df = pd.concat([tr.df for tr in logs.values()])
bins = np.unique(np.quantile(df.prompt_tokens, np.linspace(0, 1, 11)))
df["prompt bin"] = pd.cut(df.prompt_tokens, bins, include_lowest=True)
g = df.groupby("prompt bin", observed=True).output_tokens.agg(["median", "mean", "count"])
ax = g["median"].plot(marker="o", figsize=(7, 3.5), rot=30)
ax.set(xlabel="request tokens (decile bins)", ylabel="median response tokens", title="Response grows with request")
ax.grid(alpha=.3); g'''),
    ("md", """## A generator fitted to the trace

`fitted_generator` turns the statistics into a scenario `workload.generator` block (Gamma arrivals with the
measured rate and CV, correlated lognormal lengths); `simllm trace generate --fit TRACE` does the same
from the command line."""),
    ("code", '''gen = fitted_generator(trace_stats(logs["API log"].df)); gen'''),
    ("code", '''from simllm.workload import build_workload
n = 2000 if SMALL else 20000
reqs = build_workload({"generator": {**gen, "num_requests": n}}, seed=0)
t = np.array([r.arrival_s for r in reqs]); gaps = np.diff(t)
cv = gaps.std() / gaps.mean()
print(f"generated {len(reqs)} requests: rate {len(reqs)/t[-1]:.3f} req/s (target {gen['arrivals']['rate']:.3f}), CV {cv:.2f} (target {gen['arrivals']['cv']:.2f})")'''),
]


def build() -> list[Path]:
    out = []
    for name, cells in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
                    for kind, src in cells]
        path = HERE / name
        nbf.write(nb, path)
        out.append(path)
    return out


if __name__ == "__main__":
    for p in build():
        print(f"wrote {p}")
