"""Model descriptors, parameter counting, Hugging Face import and the ``simllm model`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from simllm.cli import main
from simllm.config import validate
from simllm.errors import InputError
from simllm.hf_import import import_hf_config
from simllm.model import ModelSpec, list_models, load_model, model_path, param_breakdown

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
SHIPPED = ["llama-3-8b", "llama-3-70b", "llama-3.1-405b", "mixtral-8x7b", "qwen3-235b-a22b",
           "deepseek-v3", "pangu-pro-moe", "pangu-ultra-moe"]
# architecture fields an import must reproduce (the rest is naming and provenance)
NOT_ARCH = {"name", "description", "aliases", "source", "published_params"}


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# -- descriptors and counts --------------------------------------------------------------------
def test_all_shipped_models_present():
    assert set(SHIPPED) <= set(list_models())


@pytest.mark.parametrize("name", SHIPPED)
def test_params_match_published(name):
    spec = load_model(name)
    pub = spec.published_params
    assert pub is not None and pub.source.strip()
    assert spec.total_params == pytest.approx(pub.total, rel=0.02)
    if pub.active is not None:
        assert spec.active_params == pytest.approx(pub.active, rel=0.02)
    else:  # dense model: every weight is used by every token
        assert spec.active_params == spec.total_params


@pytest.mark.parametrize("name", SHIPPED)
def test_breakdown_adds_up(name):
    spec = load_model(name)
    b = param_breakdown(spec)
    parts = ("embedding", "lm_head", "attention", "dense_ffn", "routed_experts", "shared_experts", "router", "norms")
    assert sum(b[k] for k in parts) == pytest.approx(b["total"], rel=1e-12)
    assert b["attention"] == b["attention_per_layer"] * spec.num_layers
    assert b["active_non_embedding"] <= b["active"] <= b["total"]
    if spec.moe is None:
        assert b["routed_experts"] == b["shared_experts"] == b["router"] == 0
    else:
        assert b["routed_experts"] == b["routed_experts_per_layer"] * spec.num_moe_layers
        assert b["expert"] * spec.moe.num_experts == b["routed_experts_per_layer"]


def test_llama3_8b_hand_count():
    h, f, v, L = 4096, 14336, 128256, 32
    per_layer = 2 * h * h + 2 * h * 1024 + 3 * h * f + 2 * h  # q, o; k, v (8 KV heads x 128); SwiGLU; 2 norms
    assert load_model("llama-3-8b").total_params == L * per_layer + 2 * v * h + h


def test_deepseek_v3_structure_and_mla_count():
    spec = load_model("deepseek-v3")
    assert spec.num_moe_layers == 58 and spec.num_dense_layers == 3
    assert not spec.is_moe_layer(2) and spec.is_moe_layer(3)
    h, nh = 7168, 128
    mla = (h * 1536 + 1536 + 1536 * nh * (128 + 64)  # q down, its norm, q up
           + h * (512 + 64) + 512 + 512 * nh * (128 + 128)  # kv down (+rope key), its norm, kv up
           + nh * 128 * h)  # output
    assert param_breakdown(spec)["attention_per_layer"] == mla
    assert spec.mtp_layers == 1  # described, not counted: 671B main model (685B with MTP)
    assert spec.total_params < 680e9


def test_tied_embeddings_count_once():
    data = load_model("llama-3-8b").model_dump()
    untied = ModelSpec.model_validate(data)
    tied = ModelSpec.model_validate({**data, "tie_embeddings": True})
    b = param_breakdown(tied)
    assert b["lm_head"] == 0
    assert untied.total_params - tied.total_params == 128256 * 4096
    assert tied.active_params == tied.total_params


def test_kv_bytes_llama3_70b():
    assert load_model("llama-3-70b").kv_cache_bytes_per_token(2) == 80 * 2 * 8 * 128 * 2 == 327_680


def test_kv_bytes_deepseek_v3_mla():
    spec = load_model("deepseek-v3")
    assert spec.kv_cache_bytes_per_token(2) == 61 * (512 + 64) * 2
    assert spec.kv_cache_bytes_per_token() == 61 * (512 + 64) * 1  # model dtype fp8


def test_weight_bytes():
    spec = load_model("llama-3-70b")
    assert spec.weight_bytes(2) == spec.total_params * 2
    assert spec.weight_bytes() == spec.total_params * 2  # bf16
    assert load_model("deepseek-v3").weight_bytes() == pytest.approx(671.03e9, rel=1e-4)


def test_pangu_pro_moge():
    m = load_model("pangu-pro-moe").moe
    assert (m.num_experts, m.num_groups, m.top_k, m.num_shared_experts, m.routing) == (64, 8, 8, 4, "moge")


def test_aliases_resolve():
    assert load_model("dsv3").name == "deepseek-v3"
    assert load_model("Mixtral").name == "mixtral-8x7b"


# -- schema errors -----------------------------------------------------------------------------
def _bad(tmp_path, base: str, edit) -> Path:
    """A copy of a shipped descriptor with one edit."""
    data = yaml.safe_load(model_path(base).read_text())
    edit(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("base,edit,field", [
    ("llama-3-8b", lambda d: d.pop("hidden_size"), "hidden_size"),
    ("llama-3-8b", lambda d: d.update(num_layers=0), "num_layers"),
    ("llama-3-8b", lambda d: d["attention"].update(head_dim=-128), "attention.head_dim"),
    ("llama-3-8b", lambda d: d["ffn"].update(intermediate_size=0), "ffn.intermediate_size"),
    ("mixtral-8x7b", lambda d: d["moe"].update(top_k=9), "moe.top_k"),
    ("deepseek-v3", lambda d: d["moe"].update(num_groups=7), "moe.num_groups"),
    ("deepseek-v3", lambda d: d["attention"].pop("kv_lora_rank"), "attention"),
    ("llama-3-8b", lambda d: d.update(bogus=1), "bogus"),
])
def test_bad_model_file_exit_2(tmp_path, capsys, base, edit, field):
    p = _bad(tmp_path, base, edit)
    code, out, err = run_cli(["model", "show", str(p)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(p) in lines[0] and f": {field}: " in lines[0]


def test_malformed_yaml_exit_2(tmp_path, capsys):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\n  num_layers: [\n")
    code, _, err = run_cli(["model", "show", str(p)], capsys)
    assert code == 2 and str(p) in err and "malformed YAML" in err and len(err.strip().splitlines()) == 1


def test_unknown_model_exit_2(capsys):
    code, _, err = run_cli(["model", "show", "no-such-model"], capsys)
    assert code == 2 and "unknown model 'no-such-model'" in err and "llama-3-8b" in err


# -- Hugging Face import -----------------------------------------------------------------------
def _arch(spec: ModelSpec) -> dict:
    return {k: v for k, v in spec.model_dump().items() if k not in NOT_ARCH}


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").is_file()))
def test_import_reproduces_shipped(name):
    cfg = FIXTURES / name / "config.json"
    data = import_hf_config(cfg)
    assert data["name"] == name
    imported = validate(ModelSpec, data, file=cfg)
    assert _arch(imported) == _arch(load_model(name))


def test_import_fixtures_cover_required_families():
    archs = {json.loads((p / "config.json").read_text())["architectures"][0] for p in FIXTURES.iterdir() if p.is_dir()}
    assert {"LlamaForCausalLM", "MixtralForCausalLM", "Qwen3MoeForCausalLM", "DeepseekV3ForCausalLM"} <= archs


def test_import_qwen2_moe(tmp_path):
    # the Qwen1.5-MoE-A2.7B layout: one gated shared expert, qkv bias by default
    cfg = {"architectures": ["Qwen2MoeForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 24,
           "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 151936, "intermediate_size": 5632,
           "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts": 60,
           "num_experts_per_tok": 4, "decoder_sparse_step": 1, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    spec = validate(ModelSpec, import_hf_config(p, name="qwen-moe"), file=p)
    assert spec.attention.kind == "mha" and spec.attention.qkv_bias
    assert spec.moe.num_shared_experts == 1 and spec.moe.shared_intermediate_size == 5632
    assert spec.num_moe_layers == 24


@pytest.mark.parametrize("cfg,field,words", [
    ({"architectures": ["GPT2LMHeadModel"]}, "architectures", "unsupported architecture"),
    ({"hidden_size": 1}, "architectures", "required key is missing"),
    ({"architectures": ["LlamaForCausalLM"], "hidden_size": 4096}, "num_hidden_layers", "required key is missing"),
    ({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": "32"}, "num_hidden_layers", "integer"),
    ({"architectures": ["MixtralForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64, "vocab_size": 10,
      "num_attention_heads": 4, "intermediate_size": 128}, "num_local_experts", "required key is missing"),
])
def test_import_errors(tmp_path, cfg, field, words):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(InputError) as e:
        import_hf_config(p)
    assert e.value.file == str(p) and e.value.field == field and words in e.value.message


def test_import_malformed_json_cli(tmp_path, capsys):
    p = tmp_path / "config.json"
    p.write_text("{not json")
    code, _, err = run_cli(["model", "import", str(p)], capsys)
    assert code == 2 and str(p) in err and "malformed JSON" in err


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_list_json(capsys):
    code, out, _ = run_cli(["model", "list", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert {r["name"] for r in rows} >= set(SHIPPED)
    assert all(r["total_params"] > 0 and r["active_params"] > 0 for r in rows)


def test_cli_list_table(capsys):
    code, out, _ = run_cli(["model", "list"], capsys)
    assert code == 0 and "deepseek-v3" in out


def test_cli_show_json(capsys):
    code, out, _ = run_cli(["model", "show", "llama-3-70b", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["name"] == "llama-3-70b" and d["kv_bytes_per_token"] == 327_680
    assert d["total_params"] == pytest.approx(70.55e9, rel=1e-3)
    assert d["published_params"]["total"] == 70.6e9
    assert d["param_breakdown"]["total"] == d["total_params"]


def test_cli_show_text(capsys):
    code, out, _ = run_cli(["model", "show", "deepseek-v3"], capsys)
    assert code == 0 and "kv_lora_rank: 512" in out and "routed_experts" in out


def test_cli_import_roundtrip(tmp_path, capsys):
    out_file = tmp_path / "mixtral.yaml"
    code, _, _ = run_cli(["model", "import", str(FIXTURES / "mixtral-8x7b" / "config.json"),
                          "--name", "my-mixtral", "--out", str(out_file)], capsys)
    assert code == 0
    spec = load_model(str(out_file))
    assert spec.name == "my-mixtral"
    assert _arch(spec) == _arch(load_model("mixtral-8x7b"))


def test_cli_import_prints_yaml(capsys):
    code, out, _ = run_cli(["model", "import", str(FIXTURES / "llama-3-8b" / "config.json")], capsys)
    assert code == 0
    assert yaml.safe_load(out)["attention"]["num_kv_heads"] == 8


@pytest.mark.parametrize("args", [["model", "--help"], ["model", "list", "--help"], ["model", "show", "--help"],
                                  ["model", "import", "--help"]])
def test_cli_help(args, capsys):
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "Usage" in out


def test_register_without_explain_module(monkeypatch):
    import sys
    import types

    import typer

    from simllm.cli import model as model_cli

    monkeypatch.setitem(sys.modules, "simllm.cli.model_explain", None)  # as if the file were absent
    app = typer.Typer()
    model_cli.register(app)  # swallowed: the missing module is exactly simllm.cli.model_explain

    broken = types.ModuleType("simllm.cli.model_explain")

    def _missing(attr):
        raise ModuleNotFoundError("No module named 'some_dependency'", name="some_dependency")

    broken.__getattr__ = _missing
    monkeypatch.setitem(sys.modules, "simllm.cli.model_explain", broken)
    with pytest.raises(ModuleNotFoundError):
        model_cli.register(typer.Typer())  # any other missing module is a real error


def test_model_explain_understands_ep_and_warns_when_weights_do_not_fit():
    from simllm.cli.model_explain import explain

    r = explain("deepseek-v3", "h800", batch=64, context=1024, ep=32, cluster="h800-ep", weight_dtype="fp8")
    assert r["ep"] == 32 and r["dp"] == 32 and r["batch"]["tokens_per_dp_rank"] == 2
    m = r["moe_layer"]
    assert m["dispatch_combine_s"] > 0 and m["routed_experts_s"] > 0 and r["warnings"] == []
    # EP32 spreads the routed experts: far fewer weight bytes per device than all 256 experts on one
    one = explain("deepseek-v3", "h800", batch=64, context=1024, weight_dtype="fp8")
    assert r["weight_bytes_per_device"] < one["weight_bytes_per_device"] / 5
    assert one["warnings"] and "do not fit" in one["warnings"][0]  # ~680 GB of fp8 weights on one 80 GB GPU
