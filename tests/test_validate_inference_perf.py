"""inference-perf loads beyond constant single-turn shared_prefix: length distributions, multi-turn chat,
random / synthetic data, dataset-backed runs replayed from their per-request metrics, and bad input.

Expected values come from inference-perf's code (kubernetes-sigs/inference-perf: utils/distribution.py,
datagen/shared_prefix_datagen.py, apis/user_session.py, datagen/random_datagen.py, synthetic_datagen.py),
restated here as closed forms (moments of the distributions, the session's context arithmetic)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from simllm.cli import main
from simllm.errors import InputError
from simllm.validate import read_run, simulate_run
from simllm.workload.inference_perf import (LengthDist, build_requests, chat_sessions, read_config,
                                            replay_per_request, shared_prefix_prompts)

E2E = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "e2e" / "vllm-h100-inference-perf"
RUN = E2E / "runs" / "20260217-155451-llama-2-7b-tp1-codegen"
MODEL = E2E / "model_configs" / "Llama-2-7b-hf" / "config.json"
needs_data = pytest.mark.skipif(not RUN.is_dir(), reason="../shared/data/e2e is absent")


def _cfg(tmp_path: Path, edit) -> Path:
    """A config.yaml: the codegen run's, edited."""
    c = yaml.safe_load((RUN / "results" / "config.yaml").read_text()) if RUN.is_dir() else _minimal()
    edit(c)
    p = tmp_path / "results" / "config.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(c, sort_keys=False))
    return p


def _minimal() -> dict:
    return {"api": {"type": "completion", "streaming": True},
            "data": {"type": "shared_prefix", "shared_prefix": {"num_groups": 10, "num_prompts_per_group": 10,
                                                                "system_prompt_len": 100, "question_len": 466,
                                                                "output_len": 247}},
            "load": {"type": "constant", "stages": [{"rate": 5.0, "duration": 600}], "request_timeout": None},
            "server": {"ignore_eos": True}}


def _run_folder(tmp_path: Path, edit, name="run") -> Path:
    """A run folder: the codegen run's files (server config, measured metrics, the model's config.json) with
    its config.yaml edited."""
    d = tmp_path / name
    shutil.copytree(RUN, d)
    shutil.copy(MODEL, d / "config.json")
    c = yaml.safe_load((d / "results" / "config.yaml").read_text())
    edit(c)
    (d / "results" / "config.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
    return d


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr()


# -- distributions, as utils/distribution.py draws them ---------------------------------------------------
N = 200_000


def test_normal_is_clipped_and_rounded():
    d = LengthDist("normal", 200.0, 50.0, 100, 400, legacy=True)
    x = d.sample(np.random.default_rng(0), N)
    assert x.dtype.kind == "i" and x.min() >= 100 and x.max() <= 400
    assert x.mean() == pytest.approx(200.0, abs=0.5) and x.std() == pytest.approx(50.0, rel=0.02)
    # clipping piles the tail on the bound: P(X < 150) of N(200, 50) at min 150 is Phi(-1) = 0.1587
    y = LengthDist("normal", 200.0, 50.0, 150, 400, legacy=True).sample(np.random.default_rng(1), N)
    assert (y == 150).mean() == pytest.approx(0.1587, abs=0.005)


def test_lognormal_moments_both_versions():
    # sample_from_distribution: moment-matched lognormal of mean / std_dev
    x = LengthDist("lognormal", 150.0, 60.0, 1, 100_000).sample(np.random.default_rng(2), N)
    assert x.mean() == pytest.approx(150.0, rel=0.01) and x.std() == pytest.approx(60.0, rel=0.03)
    # generate_distribution: the lognormal of mean - min, shifted by min (same mean, same spread)
    y = LengthDist("lognormal", 150.0, 60.0, 50, 100_000, legacy=True).sample(np.random.default_rng(3), N)
    assert y.min() >= 50 and y.mean() == pytest.approx(150.0, rel=0.01) and y.std() == pytest.approx(60.0, rel=0.03)


def test_uniform_ranges_both_versions():
    # legacy: uniform on [min, max) then rounded: the mean is (min + max) / 2
    x = LengthDist("uniform", 0.0, 0.0, 10, 100, legacy=True).sample(np.random.default_rng(4), N)
    assert x.min() == 10 and x.max() == 100 and x.mean() == pytest.approx(55.0, abs=0.3)
    # sample_from_distribution: uniform on [min, max + 1), rounded and clipped at max: mean 55.5 - 0.5/91 * 0.5
    y = LengthDist("uniform", 0.0, 0.0, 10, 100).sample(np.random.default_rng(5), N)
    assert y.min() == 10 and y.max() == 100 and y.mean() == pytest.approx(55.5, abs=0.3)


def test_fixed_skew_normal_poisson():
    assert set(LengthDist("fixed", 99.9, 5.0, 0, 1000).sample(np.random.default_rng(0), 100)) == {99}  # int(mean)
    # Azzalini skew-normal, ``mean`` the location: E = loc + s * delta * sqrt(2 / pi)
    a = 4.0
    x = LengthDist("skew_normal", 500.0, 100.0, -10_000, 10_000, skew=a).sample(np.random.default_rng(6), N)
    assert x.mean() == pytest.approx(500.0 + 100.0 * a / math.sqrt(1 + a * a) * math.sqrt(2 / math.pi), abs=1.0)
    p = LengthDist("poisson", 10.0, 0.0, 0, 1000).sample(np.random.default_rng(7), N)
    assert p.mean() == pytest.approx(10.0, abs=0.05) and p.var() == pytest.approx(10.0, rel=0.03)


def test_config_forms_of_shared_prefix_lengths(tmp_path):
    def inline(c):
        sp = c["data"]["shared_prefix"]
        sp.clear()
        sp.update({"num_unique_system_prompts": 4, "num_users_per_system_prompt": 25,
                   "system_prompt_len": {"type": "uniform", "min": 100, "max": 300, "mean": 200, "std_dev": 0},
                   "question_len": {"type": "lognormal", "mean": 300, "std_dev": 100, "min": 10, "max": 3000},
                   "output_len": {"type": "normal", "mean": 200, "std_dev": 40, "min": 50, "max": 400}})
    ld = read_config(_cfg(tmp_path / "a", inline))
    assert (ld.num_groups, ld.prompts_per_group) == (4, 25)  # the aliases
    assert ld.system_dist.kind == "uniform" and ld.question_dist.kind == "lognormal" and not ld.question_dist.legacy

    def flat(c):
        c["data"]["shared_prefix"].update({"question_len_std": 100, "question_len_min": 200, "question_len_max": 700,
                                           "output_len_std": 30, "output_len_min": 100, "output_len_max": 300})
    ld = read_config(_cfg(tmp_path / "b", flat))
    q = ld.question_dist
    assert (q.kind, q.mean, q.std, q.lo, q.hi, q.legacy) == ("normal", 466.0, 100.0, 200, 700, True)

    def legacy(c):
        c["data"]["shared_prefix"]["question_distribution"] = {"min": 10, "max": 900, "mean": 300, "std_dev": 80}
    ld = read_config(_cfg(tmp_path / "c", legacy))
    assert ld.question_dist.mean == 300.0 and ld.question_dist.legacy and ld.output_dist is None


def test_lengths_drawn_per_group(tmp_path):
    def edit(c):
        c["data"]["shared_prefix"].update({
            "num_groups": 50, "num_prompts_per_group": 40,
            "system_prompt_len": {"type": "uniform", "min": 100, "max": 300, "mean": 0, "std_dev": 0},
            "question_len": {"type": "normal", "mean": 400, "std_dev": 100, "min": 100, "max": 700},
            "output_len": {"type": "normal", "mean": 200, "std_dev": 40, "min": 50, "max": 400}})
    ld = read_config(_cfg(tmp_path, edit))
    sp = shared_prefix_prompts(ld, np.random.default_rng([0, 1]))  # the lengths stream of build_requests(seed=0)
    # one system prompt length per group, shared by its prompts; uniform on [100, 301) clipped: mean 200.5
    for g in range(50):
        assert len(set(sp.system[sp.group == g])) == 1
    assert len(set(sp.system)) > 10 and 100 <= sp.system.min() and sp.system.max() <= 300
    assert sp.question.mean() == pytest.approx(400, abs=6) and sp.question.std() == pytest.approx(100, rel=0.1)
    assert sp.question.min() >= 100 and sp.question.max() <= 700
    assert sp.output.mean() == pytest.approx(200, abs=3) and 50 <= sp.output.min() and sp.output.max() <= 400
    # requests: prompt = system + question (scaled), request k the prompt k % 2000 of the shuffled list
    reqs, _ = build_requests(ld, seed=0, prompt_scale=1.0, unit_tokens=16)
    lens = np.array([r.prompt_tokens for r in reqs])
    assert set(lens) <= set((sp.system + sp.question).tolist())
    assert reqs[0].prompt_tokens == reqs[2000].prompt_tokens and reqs[0].prefix_blocks == reqs[2000].prefix_blocks
    # the units of a group's system prompt are shared by its prompts
    first = {}
    for r in reqs[:2000]:
        if r.prefix_blocks:
            g = r.prefix_blocks[0][0]
            first.setdefault(g, r.prefix_blocks[0])
            assert r.prefix_blocks[0] == first[g]


# -- multi-turn chat, as user_session.py keeps its context -------------------------------------------------
def _multi(c, rate=5.0, duration=60, **sp):
    c["data"]["shared_prefix"].update({"num_groups": 2, "num_prompts_per_group": 5, "enable_multi_turn_chat": True,
                                       **sp})
    c["load"]["stages"] = [{"rate": rate, "duration": duration}]


def test_round_prompt_is_system_plus_earlier_questions_and_answers(tmp_path):
    ld = read_config(_cfg(tmp_path, lambda c: _multi(c, question_len=100, output_len=50, system_prompt_len=300)))
    ses, stage = chat_sessions(ld, seed=0, unit_tokens=16)
    assert ses.num_requests == 300 and len(ses.sessions) == 10  # request k: user k % 10, round k // 10
    si = 3
    prompts = []
    for r in range(len(ses.sessions[si].turns)):
        t = ses.turn(si, r)
        prompts.append(t.prompt_tokens)
        if r:  # round r's prompt extends round r-1's prompt + answer: its keys start with r-1's
            assert t.prefix_blocks[:len(prev)] == prev
        prev = t.prefix_blocks
        ses.turn_done(si, r, 0.0, ok=True)
    assert prompts == [300 + r * (100 + 50) + 100 for r in range(30)]
    # a failed round leaves the context as it was: the next round sends the same prompt
    s2 = 4
    a = ses.turn(s2, 0).prompt_tokens
    ses.turn_done(s2, 0, 0.0, ok=False)
    assert ses.turn(s2, 1).prompt_tokens == a


@needs_data
def test_simulated_rounds_are_serialised_and_long_contexts_fail(tmp_path):
    # 10 users, 30 rounds each; contexts pass max_model_len 4096 after a few rounds
    d = _run_folder(tmp_path, lambda c: _multi(c, rate=5.0, duration=60))
    run = read_run(d)
    sim = simulate_run(run)
    req, ses = sim["requests"], sim["workload"]
    sent = np.asarray(ses.sent)
    user, rnd = sent % 10, sent // 10
    arr = req["arrival_s"].to_numpy()
    e2e = req["e2e_s"].to_numpy()
    rejected = req["rejected_reason"].to_numpy() != ""
    for u in range(10):
        idx = np.where(user == u)[0]
        idx = idx[np.argsort(rnd[idx])]
        assert (np.diff(rnd[idx]) == 1).all()
        for a, b in zip(idx[:-1], idx[1:]):  # round r+1 is sent after the client saw round r end
            end = arr[a] + (e2e[a] if np.isfinite(e2e[a]) else 0.0)
            assert arr[b] >= end - 1e-9
    # refused: every round whose prompt + max_tokens (247, ignore_eos) exceeds 4096, and, its context frozen,
    # every later round of the user; the first rounds are all accepted
    p = req["prompt_tokens"].to_numpy()
    assert (rejected == (p + 247 > 4096)).all()
    us = ses.users[0]
    k = next(r for r in range(30) if us.sys_tokens + r * (us.question + 247) + us.question + 247 > 4096)
    assert rejected.sum() == 10 * (30 - k)
    rec_failed = (rejected | np.isfinite(req["aborted_s"].to_numpy())).mean()
    from simllm.validate import validate_run
    rec = validate_run(d)
    assert rec["failed_simulated"] == pytest.approx(rec_failed)


# -- random / synthetic ----------------------------------------------------------------------------------
def _random(c, typ="random", tc=1000):
    c["data"]["type"] = typ
    c["data"]["input_distribution"] = {"min": 100, "max": 900, "mean": 500, "std_dev": 150, "total_count": tc}
    c["data"]["output_distribution"] = {"min": 20, "max": 300, "mean": 150, "std_dev": 50, "total_count": tc}


def test_random_and_synthetic_lengths_and_prefixes(tmp_path):
    ld = read_config(_cfg(tmp_path / "r", _random))
    reqs, stage = build_requests(ld, seed=0, unit_tokens=16)
    p = np.array([r.prompt_tokens for r in reqs])
    o = np.array([r.output_tokens for r in reqs])
    assert len(reqs) == 9000 and p.min() >= 100 and p.max() <= 900 and o.min() >= 20 and o.max() <= 300
    assert p.mean() == pytest.approx(500, abs=12) and o.mean() == pytest.approx(150, abs=5)
    assert reqs[0].prompt_tokens == reqs[1000].prompt_tokens  # request k: the k % total_count-th lengths
    assert len({r.prefix_blocks[0] for r in reqs[:1000]}) == 1000  # random tokens: nothing shared
    ld = read_config(_cfg(tmp_path / "s", lambda c: _random(c, "synthetic")))
    reqs, _ = build_requests(ld, seed=0, unit_tokens=16)
    a, b = sorted(reqs[:2], key=lambda r: r.prompt_tokens)
    assert b.prefix_blocks[:len(a.prefix_blocks)] == a.prefix_blocks  # prefixes of one text


@needs_data
def test_random_run_validates(tmp_path):
    d = _run_folder(tmp_path, lambda c: (_random(c), c["load"].update(stages=[{"rate": 2.0, "duration": 60}])))
    rec = __import__("simllm.validate", fromlist=["validate_run"]).validate_run(d)
    assert rec["stages"] and rec["stages"][-1]["simulated"]["ttft"]["mean"] > 0


# -- dataset-backed: per_request_lifecycle_metrics.json or exit 2 -----------------------------------------
def test_dataset_run_without_per_request_file_exits_2(tmp_path, capsys):
    d = tmp_path / "run"
    (d / "results").mkdir(parents=True)
    _cfg(d, lambda c: c["data"].update(type="shareGPT", path="/data/sharegpt.json"))
    (d / "exp-config.yaml").write_text("model: meta-llama/Llama-2-7b-hf\ntensor_parallelism: 1\n")
    code, cap = _cli(["validate", str(d)], capsys)
    lines = cap.err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "data.type" in lines[0] and "/data/sharegpt.json" in lines[0] and "per_request_lifecycle_metrics" in lines[0]


def test_dataset_run_replays_per_request_file(tmp_path):
    cfg = _cfg(tmp_path, lambda c: (c["data"].update(type="cnn_dailymail", path="x"),
                                    c["load"].update(stages=[{"rate": 1.0, "duration": 10},
                                                             {"rate": 2.0, "duration": 10}])))
    recs = [{"start_time": 1000.0 + 0.5 * i, "end_time": 1001.0 + 0.5 * i, "request": json.dumps({"max_tokens": 77}),
             "response": "", "info": {"input_tokens": 100 + i, "output_tokens": 0 if i == 3 else 50 + i,
                                      "output_token_times": []},
             "error": {"error_type": "TimeoutError", "error_msg": ""} if i == 3 else None} for i in range(30)]
    (cfg.parent / "per_request_lifecycle_metrics.json").write_text(json.dumps(recs))
    ld = read_config(cfg)
    reqs, stage = replay_per_request(ld)
    assert [r.arrival_s for r in reqs] == [0.5 * i for i in range(30)]
    assert reqs[5].prompt_tokens == 105 and reqs[5].output_tokens == 55
    assert reqs[3].output_tokens == 77  # failed without a count: its request's max_tokens
    assert (stage == (np.arange(30) * 0.5 >= 10)).all()


# -- bad input: one line, exit 2 ------------------------------------------------------------------------
@pytest.mark.parametrize("edit, field", [
    (lambda c: c["data"]["shared_prefix"].update(question_len={"type": "zipf", "mean": 3}),
     "data.shared_prefix.question_len.type"),
    (lambda c: c["data"]["shared_prefix"].update(output_len={"type": "normal", "min": 500, "max": 100, "mean": 200}),
     "data.shared_prefix.output_len.min"),
    (lambda c: c["data"]["shared_prefix"].update(question_len_std=50), "data.shared_prefix.question_len_min"),
    (lambda c: c["data"]["shared_prefix"].update(question_len="long"), "data.shared_prefix.question_len"),
    (lambda c: c["data"].update(type="mock"), "data.type"),
    (lambda c: c["data"].update(type="random"), "data.input_distribution"),
    (lambda c: c["load"].update(request_timeout=-1), "load.request_timeout"),
])
def test_bad_configs_one_line_exit_2(tmp_path, capsys, edit, field):
    with pytest.raises(InputError) as e:
        read_config(_cfg(tmp_path / "x", edit))
    assert field in str(e.value) and "\n" not in str(e.value)
    if RUN.is_dir():
        d = _run_folder(tmp_path, edit)
        code, cap = _cli(["validate", str(d)], capsys)
        assert code == 2 and field in cap.err and len(cap.err.strip().splitlines()) == 1


def test_bad_per_request_file_exit_2(tmp_path):
    cfg = _cfg(tmp_path, lambda c: c["data"].update(type="shareGPT"))
    (cfg.parent / "per_request_lifecycle_metrics.json").write_text(json.dumps([{"start_time": "soon"}]))
    with pytest.raises(InputError) as e:
        replay_per_request(read_config(cfg))
    assert "start_time" in str(e.value) and "per_request_lifecycle_metrics.json" in str(e.value)


# -- the client's slots: worker_max_concurrency x num_workers, a concurrent stage's concurrency_level --------
def _in_flight_max(arr, end) -> int:
    """Most requests in flight at once (an end and a send at the same instant, to 1 ns: the end first)."""
    ev = sorted([(round(a, 9), 1) for a in arr] + [(round(e, 9), -1) for e in end], key=lambda x: (x[0], x[1]))
    n = m = 0
    for _, d in ev:
        n += d
        m = max(m, n)
    return m


@needs_data
@pytest.mark.parametrize("edit, slots", [
    (lambda c: c["load"].update(type="concurrent", stages=[{"num_requests": 120, "concurrency_level": 6}]), 6),
    (lambda c: c["load"].update(stages=[{"rate": 20.0, "duration": 10}], num_workers=2, worker_max_concurrency=2),
     4),
])
def test_client_slots_bound_requests_in_flight(tmp_path, edit, slots):
    d = _run_folder(tmp_path, edit)
    ld = read_config(d / "results" / "config.yaml")
    assert ld.max_in_flight == slots
    sim = simulate_run(read_run(d))
    req, pool = sim["requests"], sim["workload"]
    arr = req["arrival_s"].to_numpy()
    end = arr + req["e2e_s"].to_numpy()
    assert len(req) == len(pool.requests) and np.isfinite(end).all()
    assert _in_flight_max(arr, end) == slots  # the slots are full (the server is slower than the offered load)
    sched = np.array([pool.requests[k].arrival_s for k in pool.sent])
    assert (arr >= sched - 1e-12).all() and sorted(pool.sent) == list(range(len(pool.requests)))
    # request k (k >= slots) is sent when the first slot frees after it was due: the slots take them in order
    assert (np.diff(np.array(pool.sent)) > 0).all()
    ends = np.sort(end)
    for i in range(slots, len(arr)):
        assert arr[i] == pytest.approx(max(sched[i], ends[i - slots]), abs=1e-9)
    if ld.load_type == "concurrent":
        rec = __import__("simllm.validate", fromlist=["validate_run"]).validate_run(d)
        assert rec["stages"][-1]["simulated"]["requests_per_s"] > 0


def test_concurrent_stages_of_different_levels_exit_2(tmp_path):
    with pytest.raises(InputError) as e:
        read_config(_cfg(tmp_path, lambda c: c["load"].update(type="concurrent", stages=[
            {"num_requests": 10, "concurrency_level": 2}, {"num_requests": 10, "concurrency_level": 4}])))
    assert "load.stages" in str(e.value)


@needs_data
def test_dataset_run_validates_from_per_request_file(tmp_path):
    d = _run_folder(tmp_path, lambda c: (c["data"].update(type="shareGPT", path="/data/sg.json"),
                                         c["load"].update(stages=[{"rate": 1.0, "duration": 20}])))
    recs = [{"start_time": 50.0 + 0.7 * i, "end_time": 60.0, "request": "{}", "response": "",
             "info": {"input_tokens": 200 + 10 * i, "output_tokens": 64, "output_token_times": []}, "error": None}
            for i in range(25)]
    (d / "results" / "per_request_lifecycle_metrics.json").write_text(json.dumps(recs))
    sim = simulate_run(read_run(d))
    req = sim["requests"]
    assert len(req) == 25 and (req["prompt_tokens"].to_numpy() == 200 + 10 * np.arange(25)).all()
    assert req["arrival_s"].to_numpy() == pytest.approx(0.7 * np.arange(25))


@needs_data
def test_round_hits_the_cached_previous_prompt_and_answer(tmp_path):
    # one user, rounds far apart: round r finds its whole context (system + earlier questions and answers) cached
    # in full 16-token blocks, the previous answer included (vLLM V1 caches generated blocks), round 0 nothing
    d = _run_folder(tmp_path, lambda c: (c["data"]["shared_prefix"].update(
        num_groups=1, num_prompts_per_group=1, enable_multi_turn_chat=True, system_prompt_len=100, question_len=100,
        output_len=50), c["load"].update(stages=[{"rate": 0.2, "duration": 50}])))
    sim = simulate_run(read_run(d))
    us = sim["workload"].users[0]
    assert len(us.rounds) == 10 and us.answer == 50
    pc = sim["summary"]["prefix_cache"]
    assert pc["query_tokens"] == sum(us.sys_tokens + r * (us.question + 50) + us.question for r in range(10))
    assert pc["hit_tokens"] == sum((us.sys_tokens + r * (us.question + 50)) // 16 * 16 for r in range(1, 10))


@needs_data
def test_stage_without_requests_has_no_figures(tmp_path):
    # int(rate x duration) = 0 requests in stage 0 (inference-perf's ConstantLoadTimer sends none)
    d = _run_folder(tmp_path, lambda c: c["load"].update(stages=[{"rate": 0.5, "duration": 1},
                                                                 {"rate": 2.0, "duration": 30}]))
    from simllm.validate import validate_run
    rec = validate_run(d)
    st = {s["stage"]: s for s in rec["stages"]}
    assert st[0]["simulated"]["ttft"]["mean"] is None and st[1]["simulated"]["ttft"]["mean"] > 0


@needs_data
def test_stage_drain_starts_a_stage_after_the_previous_ended(tmp_path):
    d = _run_folder(tmp_path, lambda c: c["load"].update(stages=[{"rate": 8.0, "duration": 15},
                                                                 {"rate": 4.0, "duration": 15}], interval=2.0))
    run = read_run(d)
    plain, drained = simulate_run(run), simulate_run(run, stage_drain=True)
    a0, s0 = plain["requests"]["arrival_s"].to_numpy(), plain["stage"]
    req = drained["requests"]
    a1 = req["arrival_s"].to_numpy()
    end = a1 + req["e2e_s"].to_numpy()
    last0 = float(end[s0 == 0].max())
    # stage 1 scheduled from last end + interval (2 s) + 1 s, its own timing otherwise as before
    assert (a1[s0 == 0] == a0[s0 == 0]).all()
    assert a1[s0 == 1] - 15.0 == pytest.approx(a0[s0 == 1] - 15.0 + (last0 + 3.0 - 15.0))
    assert a1[s0 == 1].min() > last0 + 3.0


def test_chat_prompt_scale_inverts_the_measured_mean(tmp_path):
    # the measured mean prompt of a multi-turn run whose generated text re-tokenises 1.05x (answers 1:1)
    from simllm.workload.inference_perf import chat_prompt_scale
    ld = read_config(_cfg(tmp_path, lambda c: _multi(c, rate=2.0, duration=50, question_len=200, output_len=100,
                                                     system_prompt_len=300)))
    ses, _ = chat_sessions(ld, seed=0, prompt_scale=1.05)
    m = []
    for us in ses.users:
        for r in range(len(us.rounds)):
            m.append(us.context + r * (us.question + us.answer) + us.question)
    assert len(m) == 100 and max(m) + 100 <= 4096
    assert chat_prompt_scale(ld, float(np.mean(m)), max_model_len=4096) == pytest.approx(1.05, abs=0.003)
