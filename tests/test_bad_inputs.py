"""The exit-code contract under bad input, over every verb.

Each case must exit 2 with one line ``error: FILE: FIELD: message`` (at least a location and a
message), print no traceback and no "internal error", and finish within 10 s. Cases run in-process
(``simllm.cli.run_cli``); a handful also go through a real ``python -m simllm`` subprocess.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from simllm.cli import run_cli

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "workloads" / "scenarios" / "llama3-8b-h100-azure-conv.yaml"
AZURE = REPO / "traces" / "azure2023_conv_sample.csv"
LINE = re.compile(r"^error: [^:]+(: [^:]+)*: .+")


def _set(d: dict, key: str, value) -> dict:
    cur = d
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return d


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """A folder of bad files, plus good ones to break by options."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.yaml").write_text("")
    (d / "blank.csv").write_text("")
    (d / "latin1.yaml").write_bytes("name: caf\xe9\nmodel: llama-3-8b\n".encode("latin-1"))
    (d / "binary.yaml").write_bytes(b"\x00\xff\xfe\x89PNG\r\n\x1a\n" * 10)
    (d / "corrupt.yaml").write_text("model: [llama\nhardware: {")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "scalar.yaml").write_text("42\n")
    (d / "folder").mkdir()
    (d / "afile").write_text("x")
    (d / "dupkey.yaml").write_text("model: llama-3-8b\nhardware: {accelerator: h100-sxm}\nhardware: {node: dgx-h100}\n")
    (d / "bigint.yaml").write_text("seed: 1" + "0" * 5000 + "\n")
    (d / "deep.yaml").write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    base = yaml.safe_load(BASE.read_text())
    base["workload"] = {"trace": str(AZURE), "limit": 50}
    (d / "good.yaml").write_text(yaml.safe_dump(base))
    for name, key, value in SCENARIO_MUTATIONS:
        data = yaml.safe_load(yaml.safe_dump(base))
        if key is None:
            data = value
        elif key.startswith("-"):
            cur = data
            parts = key[1:].split(".")
            for p in parts[:-1]:
                cur = cur[p]
            del cur[parts[-1]]
        else:
            _set(data, key, value)
        (d / f"scn_{name}.yaml").write_text(yaml.safe_dump(data))
    for name, body in SWEEPS.items():
        (d / f"sweep_{name}.yaml").write_text(body.replace("BASE", str(d / "good.yaml")))
    head = AZURE.read_text().splitlines()
    for name, text in TRACES.items():
        (d / name).write_bytes(text(head) if callable(text) else text)
    (d / "garbage.csv.gz").write_bytes(b"\x1f\x8b" + b"not really gzip" * 5)
    (d / "ok.csv.gz").write_bytes(gzip.compress("\n".join(head[:30]).encode()))
    (d / "notresults.csv").write_text("a,b\n1,2\n")
    (d / "table_trunc.csv").write_text("num_tokens,m,n,k,time_stats.mean\n128,4096,4096\n")
    return d


SCENARIO_MUTATIONS = [
    ("tp0", "deployment.tp", 0), ("tpneg", "deployment.tp", -2), ("tpstr", "deployment.tp", "abc"),
    ("tp3", "deployment.tp", 3), ("tpfloat", "deployment.tp", 1.5), ("tp_huge", "deployment.tp", 1024),
    ("pp0", "deployment.pp", 0), ("rep0", "deployment.replicas", 0), ("rep_huge", "deployment.replicas", 1000000000),
    ("pools_huge", "deployment", {"disaggregation": {"prefill": {"replicas": 1, "tp": 1},
                                                     "decode": {"replicas": 10 ** 9, "tp": 1},
                                                     "kv_link": {"bandwidth": "100 GB/s", "latency": 1e-5}}}),
    ("rep_str", "deployment.replicas", "two"), ("rep_list", "deployment.replicas", [1, 2]),
    ("gmu0", "deployment.kv.gpu_memory_utilization", 0), ("gmu2", "deployment.kv.gpu_memory_utilization", 1.5),
    ("gmu_str", "deployment.kv.gpu_memory_utilization", "high"), ("block0", "deployment.kv.block_size", 0),
    ("preempt", "deployment.kv.preemption", "drop"), ("watermark", "deployment.kv.watermark", 1.0),
    ("swapbw", "deployment.kv.swap_bandwidth", "fast"), ("kv_extra", "deployment.kv.colour", "red"),
    ("seqs0", "deployment.batching.max_num_seqs", 0), ("mnbt1", "deployment.batching.max_num_batched_tokens", 1),
    ("mnbt0", "deployment.batching.max_num_batched_tokens", 0), ("batchpol", "deployment.batching.policy", "magic"),
    ("router", "deployment.router.policy", "magic"), ("wdtype", "deployment.weight_dtype", "fp3"),
    ("kvdtype", "deployment.kv_dtype", 16), ("mml0", "deployment.max_model_len", 0), ("ep0", "deployment.ep", 0),
    ("dep_extra", "deployment.colour", "red"), ("dep_list", "deployment", [1, 2]),
    ("model_nope", "model", "no-such-model"), ("model_int", "model", 7), ("model_path", "model", "/no/such.yaml"),
    ("acc_nope", "hardware.accelerator", "no-such-gpu"), ("node_nope", "hardware", {"node": "no-such-node"}),
    ("cluster_nope", "hardware", {"cluster": "no-such-cluster"}), ("hw_empty", "hardware", {}),
    ("hw_two", "hardware", {"accelerator": "h100-sxm", "cluster": "x"}), ("hw_str", "hardware", "h100"),
    ("no_model", "-model", None), ("no_hw", "-hardware", None), ("no_workload", "-workload", None),
    ("wl_empty", "workload", {}), ("trace_missing", "workload.trace", "no/such/trace.csv"),
    ("trace_int", "workload.trace", 5), ("wl_limit0", "workload.limit", 0), ("wl_limitneg", "workload.limit", -5),
    ("wl_format", "workload.format", "parquet"), ("wl_onerror", "workload.on_error", "ignore"),
    ("wl_extra", "workload.colour", "red"), ("retime_rate0", "workload.retime", {"process": "poisson", "rate": 0}),
    ("retime_proc", "workload.retime", {"process": "weibull", "rate": 1}),
    ("gen_nonum", "workload", {"generator": {"arrivals": {"rate": 1}}}),
    ("gen_huge", "workload", {"generator": {"arrivals": {"rate": 1}, "num_requests": 10 ** 12}}),
    ("gen_median", "workload", {"generator": {"arrivals": {"rate": 1}, "num_requests": 10,
                                              "lengths": {"kind": "lognormal", "prompt_median": 1e30}}}),
    ("gen_inf", "workload", {"generator": {"arrivals": {"rate": float("inf")}, "num_requests": 10}}),
    ("gen_nan", "workload", {"generator": {"arrivals": {"rate": float("nan")}, "num_requests": 10}}),
    ("slo_neg", "slo.ttft_s", -1), ("slo_str", "slo.tpot_s", "fast"), ("seed_str", "seed", "zero"),
    ("price_neg", "price_per_device_hour", -3), ("idle_neg", "idle_power_w", -1), ("top_extra", "colour", "red"),
    ("sim_extra", "sim.colour", 1), ("top_list", None, [1, 2]), ("name_list", "name", [1]),
    # found by a hostile battery run outside the repo (issue 15): NaN/inf, true-for-a-number, bounds
    ("seed_neg", "seed", -1), ("seed_bool", "seed", True), ("rep_bool", "deployment.replicas", True),
    ("limit_bool", "workload.limit", True), ("block_bool", "deployment.kv.block_size", True),
    ("gmu_bool", "deployment.kv.gpu_memory_utilization", True), ("slo_inf", "slo.ttft_s", float("inf")),
    ("price_inf", "price_per_device_hour", float("inf")), ("idle_inf", "idle_power_w", float("inf")),
    ("api_inf", "deployment.api_overhead_s", float("inf")), ("host_step_inf", "deployment.host_step_s", float("inf")),
    ("host_seq_inf", "deployment.host_per_seq_s", float("inf")),
    ("reserve_nan", "deployment.kv.activation_reserve", float("nan")),
    ("phase_nan", "workload.retime", {"rate": 1, "phase": float("nan")}),
    ("cv_tiny", "workload.retime", {"process": "gamma", "rate": 5, "cv": 1e-300}),
    ("cv_huge", "workload.retime", {"process": "gamma", "rate": 5, "cv": 1e300}),
    ("graphs_huge", "deployment.cuda_graphs", [10 ** 12]),
    ("seqs_huge", "deployment.batching", {"policy": "vllm-v0", "max_num_seqs": 10 ** 12,
                                          "max_num_batched_tokens": 10 ** 12}),
    ("mnbt_nan", "deployment.batching", {"policy": "vllm-v0", "max_num_batched_tokens": float("nan")}),
    ("mnbt_frac", "deployment.batching", {"policy": "vllm-v0", "max_num_batched_tokens": 1.5}),
    ("seqs_bool", "deployment.batching", {"policy": "vllm-v0", "max_num_seqs": True}),
    ("fixed_huge", "workload", {"generator": {"arrivals": {"rate": 1}, "num_requests": 5,
                                              "lengths": {"kind": "fixed", "prompt_tokens": 10 ** 12}}}),
    ("sigma_inf", "workload", {"generator": {"arrivals": {"rate": 1}, "num_requests": 5,
                                             "lengths": {"kind": "lognormal", "prompt_sigma": float("inf")}}}),
    ("num_bool", "workload", {"generator": {"arrivals": {"rate": 1}, "num_requests": True}}),
    ("disagg_role", "deployment", {"disaggregation": {"prefill": {"tp": 1}, "decode": {"tp": 1, "role": "prefill"},
                                                      "kv_link": {"bandwidth": "100 GB/s"}}}),
]

SWEEPS = {
    "unknown_top": "base: BASE\ncolour: red\n",
    "no_base": "grid: {deployment.tp: [1]}\n",
    "base_missing": "base: /no/such/base.yaml\n",
    "base_int": "base: 5\n",
    "grid_unknown": "base: BASE\ngrid: {deployment.colour: [1, 2]}\n",
    "grid_tp3": "base: BASE\ngrid: {deployment.tp: [1, 3]}\n",
    "grid_empty_list": "base: BASE\ngrid: {deployment.tp: []}\n",
    "grid_scalar": "base: BASE\ngrid: {deployment.tp: 2}\n",
    "grid_list": "base: BASE\ngrid: [1, 2]\n",
    "grid_badpath": "base: BASE\ngrid: {'deployment..tp': [1]}\n",
    "grid_model": "base: BASE\ngrid: {model: [llama-3-8b, nope-model]}\n",
    "grid_acc": "base: BASE\ngrid: {hardware.accelerator: [h100-sxm, nope-gpu]}\n",
    "grid_reps_huge": "base: BASE\ngrid: {deployment.replicas: [1, 1000000000]}\n",
    "zip_unequal": "base: BASE\nzip: {deployment.tp: [1, 2], deployment.replicas: [1]}\n",
    "points_scalar": "base: BASE\npoints: 5\n",
    "points_item": "base: BASE\npoints: [5]\n",
    "points_bad": "base: BASE\npoints: [{deployment.tp: 0}]\n",
    "reps0": "base: BASE\nreplications: 0\n",
    "reps_str": "base: BASE\nreplications: two\n",
    "seed_str": "base: BASE\nseed: x\n",
    "sample_noflds": "base: BASE\nsample: {n: 3}\n",
    "sample_method": "base: BASE\nsample: {method: sobol, n: 3, fields: {workload.limit: [1, 5]}}\n",
    "sample_range": "base: BASE\nsample: {n: 3, fields: {workload.limit: [5, 1]}}\n",
    "sample_n0": "base: BASE\nsample: {n: 0, fields: {workload.limit: [1, 5]}}\n",
    "sample_nstr": "base: BASE\nsample: {n: many, fields: {workload.limit: [1, 5]}}\n",
    "fmr_lohi": "base: BASE\nfind_max_rate: {lo: 10, hi: 1}\n",
    "fmr_att": "base: BASE\nfind_max_rate: {attainment: 2}\n",
    "fmr_neg": "base: BASE\nfind_max_rate: {lo: -1, hi: 4}\n",
    "fmr_extra": "base: BASE\nfind_max_rate: {colour: red}\n",
    "fmr_scalar": "base: BASE\nfind_max_rate: 3\n",
    "fmr_field": "base: BASE\nfind_max_rate: {field: 'workload..rate'}\n",
    "grid_huge": "base: BASE\ngrid: {seed: [%s], workload.limit: [%s]}\n" % (",".join(map(str, range(200))),
                                                                          ",".join(map(str, range(1, 201)))),
    "dupkey": "base: BASE\ngrid: {seed: [1]}\ngrid: {seed: [2]}\n",
}

TRACES = {
    "header_only.csv": lambda h: (h[0] + "\n").encode(),
    "neg_tokens.csv": lambda h: ("\n".join(h[:5]) + "\n2023-11-16 18:20:00.0000000,-5,10\n").encode(),
    "str_tokens.csv": lambda h: ("\n".join(h[:5]) + "\n2023-11-16 18:20:00.0000000,many,10\n").encode(),
    "frac_tokens.csv": lambda h: ("\n".join(h[:5]) + "\n2023-11-16 18:20:00.0000000,1.5,10\n").encode(),
    "bad_time.csv": lambda h: ("\n".join(h[:5]) + "\nyesterday,5,10\n").encode(),
    "unsorted.csv": lambda h: ("\n".join([h[0], h[5], h[2]]) + "\n").encode(),
    "extra_field.csv": lambda h: ("\n".join(h[:5]) + "\n2023-11-16 18:20:00.0,1,2,3,4\n").encode(),
    "unknown_header.csv": b"when,in,out\n1,2,3\n",
    "latin1.csv": lambda h: ("\n".join(h[:3]) + "\n").encode() + b"\xe9\xff,1,2\n",
    "missing_col.csv": b"TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.0,5\n",
    "bad.jsonl": b'{"timestamp": 0, "input_length": 5, "output_length": 3}\n{not json\n',
    "notobj.jsonl": b"[1, 2]\n",
    "jsonl_neg.jsonl": b'{"timestamp": 0, "input_length": -5, "output_length": 3}\n',
    "jsonl_hash.jsonl": b'{"timestamp": 0, "input_length": 5, "output_length": 3, "hash_ids": "abc"}\n',
    "jsonl_missing.jsonl": b'{"timestamp": 0, "input_length": 5}\n',
    "vllm_bench.json": b'{"backend": "vllm", "num_prompts": 2, "input_lens": [1, 2], "output_lens": [3, 4], '
                       b'"ttfts": [0.1, 0.2]}\n',
    "zeros.bin": b"\x00" * 64,
    "tz.csv": lambda h: ("\n".join(h[:5]) + "\n2023-11-16 18:20:00.0000000+05:00,5,10\n").encode(),
    "huge_tokens.csv": lambda h: ("\n".join(h[:5]) + "\n2023-11-16 18:20:00.0000000,1" + "0" * 30 + ",10\n").encode(),
    "huge.jsonl": b'{"timestamp": 0, "input_length": 1' + b"0" * 30 + b', "output_length": 3}\n',
}


def _cases() -> list[tuple[str, list[str]]]:
    c: list[tuple[str, list[str]]] = []
    for f in ("nope.yaml", "empty.yaml", "latin1.yaml", "binary.yaml", "corrupt.yaml", "list.yaml", "scalar.yaml",
              "folder", "dupkey.yaml", "bigint.yaml", "deep.yaml"):
        c += [(f"run-{f}", ["run", "{d}/" + f]), (f"sweep-{f}", ["sweep", "{d}/" + f, "--no-progress"])]
        c += [(f"model-show-{f}", ["model", "show", "{d}/" + f]), (f"hw-show-{f}", ["hw", "show", "{d}/" + f])]
    c += [(f"run-scn-{n}", ["run", "{d}/scn_" + n + ".yaml"]) for n, _, _ in SCENARIO_MUTATIONS]
    c += [(f"sweep-{n}", ["sweep", "{d}/sweep_" + n + ".yaml", "--out", "{d}/sw_" + n, "--no-progress"])
          for n in SWEEPS]
    sets = ["deployment.tp=0", "deployment.tp=abc", "deployment.replicas=1000000000", "deployment.colour=1",
            "deployment", "=3", "deployment..tp=1", "model=nope", "workload.limit=-1", "seed=[1", "hardware=5",
            "deployment.kv.gpu_memory_utilization=7", "deployment.tp.x=1", "deployment.batching.max_num_batched_tokens=1",
             "deployment.kv.activation_reserve=0.99"]
    c += [(f"run-set-{i}", ["run", "{d}/good.yaml", "--set", s]) for i, s in enumerate(sets)]
    c += [
        ("run-seed-abc", ["run", "{d}/good.yaml", "--seed", "abc"]),
        ("run-unknown-opt", ["run", "{d}/good.yaml", "--bogus"]),
        ("run-no-arg", ["run"]),
        ("run-out-file", ["run", "{d}/good.yaml", "--out", "{d}/afile"]),
        ("run-out-unwritable", ["run", "{d}/good.yaml", "--out", "/proc/simllm-out"]),
        ("run-trace-out-dir", ["run", "{d}/good.yaml", "--trace-out", "{d}/folder"]),
        ("run-trace-out-unwritable", ["run", "{d}/good.yaml", "--trace-out", "/proc/x/trace.json"]),
        ("run-format", ["run", "{d}/good.yaml", "--out", "{d}/o1", "--format", "xlsx"]),
        ("run-format-noout", ["run", "{d}/good.yaml", "--format", "parquet"]),
        ("run-name-nope", ["run", "no-such-scenario"]),
        ("sweep-jobs0", ["sweep", "{d}/good.yaml", "--jobs", "0"]),
        ("sweep-jobs-str", ["sweep", "{d}/good.yaml", "--jobs", "x"]),
        ("sweep-backend", ["sweep", "{d}/sweep_grid_tp3.yaml", "--backend", "slurm"]),
        ("sweep-address", ["sweep", "{d}/sweep_grid_tp3.yaml", "--address", "1.2.3.4"]),
        ("sweep-fmr-lohi", ["sweep", "{d}/sweep_reps0.yaml", "--find-max-rate", "--rate-lo", "5", "--rate-hi", "1"]),
        ("sweep-fmr-att", ["sweep", "{d}/sweep_unknown_top.yaml", "--find-max-rate", "--attainment", "2"]),
        ("sweep-out-file", ["sweep", "{d}/sweep_grid_tp3.yaml", "--out", "{d}/afile"]),
        ("sweep-no-arg", ["sweep"]),
        ("trace-generate-noout", ["trace", "generate"]),
        ("trace-generate-median", ["trace", "generate", "--out", "{d}/g.csv", "--prompt-median", "1e30"]),
        ("trace-generate-num0", ["trace", "generate", "--out", "{d}/g.csv", "--num", "0"]),
        ("trace-generate-numneg", ["trace", "generate", "--out", "{d}/g.csv", "--num", "-4"]),
        ("trace-generate-numhuge", ["trace", "generate", "--out", "{d}/g.csv", "--num", "1000000000000"]),
        ("trace-generate-both", ["trace", "generate", "--out", "{d}/g.csv", "--num", "5", "--duration", "5"]),
        ("trace-generate-rate0", ["trace", "generate", "--out", "{d}/g.csv", "--rate", "0"]),
        ("trace-generate-rate-inf", ["trace", "generate", "--out", "{d}/g.csv", "--rate", "inf"]),
        ("trace-generate-cvneg", ["trace", "generate", "--out", "{d}/g.csv", "--cv", "-1"]),
        ("trace-generate-amp", ["trace", "generate", "--out", "{d}/g.csv", "--amplitude", "1.5"]),
        ("trace-generate-lengths", ["trace", "generate", "--out", "{d}/g.csv", "--lengths", "weird"]),
        ("trace-generate-empirical", ["trace", "generate", "--out", "{d}/g.csv", "--lengths", "empirical"]),
        ("trace-generate-range", ["trace", "generate", "--out", "{d}/g.csv", "--lengths", "zipf",
                                  "--prompt-range", "a:b"]),
        ("trace-generate-fail", ["trace", "generate", "--out", "{d}/g.csv", "--fail-fraction", "1"]),
        ("trace-generate-mix", ["trace", "generate", "--out", "{d}/g.csv", "--model", "A:-1"]),
        ("trace-generate-outdir", ["trace", "generate", "--out", "{d}/folder"]),
        ("trace-generate-unwritable", ["trace", "generate", "--out", "/proc/nope/g.csv"]),
        ("trace-generate-fit-missing", ["trace", "generate", "--out", "{d}/g.csv", "--fit", "{d}/nope.csv"]),
        ("trace-generate-seed", ["trace", "generate", "--out", "{d}/g.csv", "--seed", "x"]),
        ("trace-stats-format", ["trace", "stats", str(AZURE), "--format", "parquet"]),
        ("trace-stats-model-azure", ["trace", "stats", str(AZURE), "--model", "GPT-4"]),
        ("trace-stats-missing", ["trace", "stats", "{d}/nope.csv"]),
        ("trace-stats-folder", ["trace", "stats", "{d}/folder"]),
        ("trace-stats-blank", ["trace", "stats", "{d}/blank.csv"]),
        ("trace-stats-gz", ["trace", "stats", "{d}/garbage.csv.gz"]),
        ("trace-stats-gz-fmt", ["trace", "stats", "{d}/ok.csv.gz", "--format", "mooncake"]),
        ("report-missing", ["report", "{d}/nope"]),
        ("report-folder", ["report", "{d}/folder"]),
        ("report-notresults", ["report", "{d}/notresults.csv"]),
        ("report-blank", ["report", "{d}/blank.csv"]),
        ("report-binary", ["report", "{d}/binary.yaml"]),
        ("hw-list-kind", ["hw", "list", "--kind", "gpus"]),
        ("hw-show-nope", ["hw", "show", "no-such-thing"]),
        ("hw-show-kind", ["hw", "show", "h100-sxm", "--kind", "links"]),
        ("model-show-nope", ["model", "show", "no-such-model"]),
        ("model-import-missing", ["model", "import", "{d}/nope.json"]),
        ("model-import-binary", ["model", "import", "{d}/binary.yaml"]),
        ("model-import-list", ["model", "import", "{d}/list.yaml"]),
        ("model-explain-tp3", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "8", "--context",
                               "512", "--tp", "3"]),
        ("model-explain-tp0", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "8", "--context",
                               "512", "--tp", "0"]),
        ("model-explain-batch0", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "0", "--context",
                                  "512"]),
        ("model-explain-ctxneg", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "1",
                                  "--context", "-5"]),
        ("model-explain-hw", ["model", "explain", "llama-3-8b", "--hw", "nope", "--batch", "1", "--context", "5"]),
        ("model-explain-dtype", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "1", "--context",
                                 "5", "--weight-dtype", "fp3"]),
        ("model-explain-nobatch", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm"]),
        ("comm-op", ["comm", "all_party", "--cluster", "dgx-h100", "--devices", "8", "--bytes", "1MiB"]),
        ("comm-devices0", ["comm", "all_reduce", "--cluster", "dgx-h100", "--devices", "0", "--bytes", "1MiB"]),
        ("comm-devices-many", ["comm", "all_reduce", "--cluster", "dgx-h100", "--devices", "100000", "--bytes",
                               "1MiB"]),
        ("comm-bytes", ["comm", "all_reduce", "--cluster", "dgx-h100", "--devices", "8", "--bytes", "lots"]),
        ("comm-cluster", ["comm", "all_reduce", "--cluster", "nope", "--devices", "8", "--bytes", "1MiB"]),
        ("comm-nocluster", ["comm", "all_reduce", "--devices", "8"]),
        ("comm-algo", ["comm", "all_reduce", "--cluster", "dgx-h100", "--devices", "8", "--bytes", "1MiB",
                       "--algorithm", "magic"]),
        ("plan-model", ["plan", "nope", "--cluster", "dgx-h100"]),
        ("plan-cluster", ["plan", "llama-3-8b", "--cluster", "nope"]),
        ("plan-nocluster", ["plan", "llama-3-8b"]),
        ("plan-prefill-str", ["plan", "llama-3-8b", "--cluster", "dgx-h100", "--prefill-tokens", "x"]),
        ("place-model", ["place", "--model", "nope"]),
        ("place-devices0", ["place", "--model", "mixtral-8x7b", "--devices", "0"]),
        ("place-loads", ["place", "--model", "mixtral-8x7b", "--devices", "4", "--loads", "{d}/nope.csv"]),
        ("place-policy", ["place", "--model", "mixtral-8x7b", "--devices", "4", "--policy", "magic"]),
        ("calibrate-check-missing", ["calibrate", "check", "{d}/nope.csv", "--hw", "h100-sxm"]),
        ("calibrate-check-hw", ["calibrate", "check", "{d}/table_trunc.csv", "--hw", "nope"]),
        ("calibrate-fit-missing", ["calibrate", "fit", "{d}/nope.csv", "--hw", "h100-sxm", "--out", "{d}/c.yaml"]),
        ("calibrate-fit-nohw", ["calibrate", "fit", "{d}/table_trunc.csv"]),
        ("hw-show-empty", ["hw", "show", "{d}/empty.yaml", "--json"]),
        ("unknown-verb", ["frobnicate"]),
        # found by a hostile battery run outside the repo (issue 15)
        ("run-seed-neg", ["run", "{d}/good.yaml", "--seed", "-1"]),
        ("trace-generate-seed-neg", ["trace", "generate", "--out", "{d}/g.csv", "--seed", "-1"]),
        ("trace-generate-mix-nan", ["trace", "generate", "--out", "{d}/g.csv", "--model", "A:nan"]),
        ("trace-generate-period-alone", ["trace", "generate", "--out", "{d}/g.csv", "--period", "0"]),
        ("trace-generate-format-nofit", ["trace", "generate", "--out", "{d}/g.csv", "--format", "azure"]),
        ("trace-generate-append-notbg", ["trace", "generate", "--out", "{d}/notresults.csv", "--num", "3",
                                         "--append"]),
        ("sweep-rate-lo-alone", ["sweep", "{d}/sweep_grid_tp3.yaml", "--rate-lo", "5"]),
        ("comm-bytes-nan", ["comm", "all_reduce", "--cluster", "dgx-h100", "--devices", "8", "--bytes", "nan"]),
        ("comm-dtype-with-bytes", ["comm", "all_reduce", "--cluster", "dgx-h100", "--devices", "8", "--bytes",
                                   "1MiB", "--dtype", "fp3"]),
        ("comm-src-on-ar", ["comm", "all_reduce", "--cluster", "dgx-h100", "--devices", "8", "--bytes", "1MiB",
                            "--src", "1"]),
        ("comm-dispatch-hidden0", ["comm", "dispatch", "--cluster", "h100-4node", "--devices", "32", "--tokens", "8",
                                   "--hidden", "0", "--topk", "8"]),
        ("comm-dispatch-tokens-huge", ["comm", "dispatch", "--cluster", "h100-4node", "--devices", "32", "--tokens",
                                       "1000000000000", "--hidden", "7168", "--topk", "8"]),
        ("comm-dispatch-algo", ["comm", "dispatch", "--cluster", "h100-4node", "--devices", "32", "--tokens", "8",
                                "--hidden", "7168", "--topk", "8", "--algorithm", "ring"]),
        ("plan-top0", ["plan", "llama-3-8b", "--cluster", "dgx-h100", "--top", "0"]),
        ("place-topk0", ["place", "--model", "mixtral-8x7b", "--devices", "4", "--top-k", "0"]),
        ("place-nodes0", ["place", "--model", "mixtral-8x7b", "--devices", "4", "--nodes", "0"]),
        ("place-devices-huge", ["place", "--model", "mixtral-8x7b", "--devices", "100000"]),
        ("place-layers-huge", ["place", "--model", "mixtral-8x7b", "--devices", "4", "--layers", "100000"]),
        ("place-redundant-huge", ["place", "--model", "mixtral-8x7b", "--devices", "4", "--redundant", "1000000000"]),
        ("place-seed-neg", ["place", "--model", "mixtral-8x7b", "--devices", "4", "--seed", "-1"]),
        ("offload-steps-huge", ["offload", "--model", "mixtral-8x7b", "--cache-experts", "4", "--steps", "1000000000"]),
        ("offload-batch-huge", ["offload", "--model", "mixtral-8x7b", "--cache-experts", "4", "--batch", "100000000"]),
        ("calibrate-fit-node-mismatch", ["calibrate", "fit", "{d}/table_trunc.csv", "--hw", "a100-sxm-80gb", "--node",
                                         "dgx-h100", "--out", "{d}/c2.yaml"]),
        ("calibrate-fit-out-proc", ["calibrate", "fit", "{d}/table_trunc.csv", "--hw", "h100-sxm", "--out",
                                    "/proc/simllm-cal.yaml"]),
        ("place-out-file", ["place", "--model", "mixtral-8x7b", "--devices", "4", "--out", "{d}/afile"]),
        ("validate-out-file", ["validate", "{d}/folder", "--out", "{d}/afile"]),
        ("calibrate-fit-out-dir", ["calibrate", "fit", "{d}/table_trunc.csv", "--hw", "a100-sxm-80gb", "--out",
                                   "{d}/folder"]),
        ("validate-seed-neg", ["validate", "{d}/folder", "--seed", "-1"]),
        ("model-explain-ep0", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "8", "--context",
                               "512", "--ep", "0"]),
        ("model-explain-cluster-noep", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "8",
                                        "--context", "512", "--cluster", "h100-4node"]),
        ("model-explain-ctx-huge", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "8",
                                    "--context", "1000000000000"]),
        ("model-explain-node-acc", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "8",
                                    "--context", "512", "--node", "dgx-a100"]),
        ("model-explain-tp-node", ["model", "explain", "llama-3-8b", "--hw", "h100-sxm", "--batch", "8",
                                   "--context", "512", "--tp", "16", "--node", "dgx-h100"]),
        ("unknown-top-opt", ["--frobnicate"]),
    ]
    for t in TRACES:
        c.append((f"trace-stats-{t}", ["trace", "stats", "{d}/" + t]))
    for t in ("neg_tokens.csv", "unsorted.csv", "unknown_header.csv", "vllm_bench.json", "bad.jsonl"):
        c.append((f"trace-generate-fit-{t}", ["trace", "generate", "--out", "{d}/g.csv", "--fit", "{d}/" + t]))
    return c


CASES = _cases()


def test_battery_is_large():
    assert len(CASES) >= 250, len(CASES)
    assert len({n for n, _ in CASES}) == len(CASES)


def _check(rc: int, out: str, err: str, elapsed: float) -> None:
    assert "Traceback" not in out + err
    assert "internal error" not in err
    assert rc == 2, (rc, out[-500:], err[-500:])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert LINE.match(lines[0]), lines[0]
    assert "None." not in lines[0] and ": None:" not in lines[0], lines[0]  # a field path names real fields
    assert elapsed < 10, elapsed


@pytest.mark.parametrize("argv", [a for _, a in CASES], ids=[n for n, _ in CASES])
def test_bad_input_exits_2_with_one_line(argv, d, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{d}", str(d)) for a in argv]
    t0 = time.perf_counter()
    rc = run_cli(args)
    elapsed = time.perf_counter() - t0
    cap = capsys.readouterr()
    _check(rc, cap.out, cap.err, elapsed)


SUBPROCESS = ["run-latin1.yaml", "run-scn-rep_huge", "sweep-grid_tp3", "run-seed-abc", "trace-stats-vllm_bench.json",
              "unknown-verb"]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_through_a_real_process(name, d, tmp_path):
    argv = dict(CASES)[name]
    args = [a.replace("{d}", str(d)) for a in argv]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "simllm", *args], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    _check(r.returncode, r.stdout, r.stderr, time.perf_counter() - t0 - 3.0)  # minus interpreter start-up
