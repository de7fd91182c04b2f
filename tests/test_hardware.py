"""Hardware descriptors and the ``simllm hw`` verb.

Every shipped file loads, every number carries a source, key figures match
/work/shared/reference/hardware.md, and bad descriptors give a one-line error naming file
and field (exit code 2 through the CLI).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from simllm.cli import main
from simllm.config import Sourced
from simllm.errors import InputError
from simllm.hardware import (
    list_hardware,
    load_accelerator,
    load_cluster,
    load_link,
    load_node,
)

HW = list_hardware()
REPO = Path(__file__).resolve().parent.parent


def run_cli(args, capsys):
    """Run ``simllm ARGS``; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


# ------------------------------------------------------------------ shipped files

def test_every_kind_is_populated():
    assert len(HW["accelerators"]) >= 10
    assert len(HW["links"]) >= 13
    assert len(HW["nodes"]) >= 9
    assert len(HW["clusters"]) >= 5


@pytest.mark.parametrize("name", HW["accelerators"])
def test_accelerator_loads(name):
    a = load_accelerator(name)
    assert a.name == name  # file name = name
    assert a.peak("bf16") > 1e14
    assert 1e10 < a.hbm_bytes < 1e12 and 1e11 < a.hbm_bw < 1e14
    assert a.sram.value > 1e6 and a.compute_units.value >= 1
    for dtype, s in a.peak_flops.items():
        assert s.value > 0 and s.source
    # dense peaks only: lower precision is never slower than bf16
    for lower in ("fp8", "int8", "fp4"):
        if lower in a.peak_flops:
            assert a.peak_flops[lower].value >= a.peak("bf16")


@pytest.mark.parametrize("name", HW["links"])
def test_link_loads(name):
    link = load_link(name)
    assert link.name == name
    assert 1e9 <= link.bw <= 2e12
    assert 1e-8 <= link.alpha <= 1e-4
    if link.efficiency is not None:
        assert 0 < link.efficiency.value <= 1


@pytest.mark.parametrize("name", HW["nodes"])
def test_node_loads(name):
    n = load_node(name)
    assert n.name == name and n.devices >= 1
    assert n.scale_up_bw > 0
    assert n.spec.source and n.spec.scale_up.source
    if n.spec.scale_out is not None:
        assert n.spec.scale_out.source and n.scale_out_bw > 0


@pytest.mark.parametrize("name", HW["clusters"])
def test_cluster_loads(name):
    c = load_cluster(name)
    assert c.name == name and c.num_devices == c.num_nodes * c.node.devices
    assert c.spec.fabric.oversubscription >= 1.0 and c.spec.fabric.source


def _sourced_values(obj):
    for field in type(obj).model_fields:
        v = getattr(obj, field)
        if isinstance(v, Sourced):
            yield field, v
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(x, Sourced):
                    yield f"{field}.{k}", x


@pytest.mark.parametrize("kind,loader", [("accelerators", load_accelerator), ("links", load_link)])
def test_every_number_has_a_source(kind, loader):
    for name in HW[kind]:
        for field, s in _sourced_values(loader(name)):
            assert s.source.strip(), f"{name}: {field} has no source"
            assert s.text, f"{name}: {field} lost its written form"


def test_every_yaml_number_is_value_source_pair():
    """No bare numbers in accelerator/link files: every leaf number sits under {value, source}."""
    def walk(d, path):
        if isinstance(d, dict):
            if "value" in d:
                assert d.get("source"), f"{path}: value without source"
                return
            for k, v in d.items():
                walk(v, f"{path}.{k}")
        elif isinstance(d, (int, float)) and not isinstance(d, bool):
            raise AssertionError(f"{path}: bare number {d}")
    for sub in ("accelerators", "links"):
        for f in sorted((REPO / "hardware" / sub).glob("*.yaml")):
            walk(yaml.safe_load(f.read_text()), f.name)


# ------------------------------------------------------------------ cross-checks with the reference table

@pytest.mark.parametrize("name,bf16_tflops,hbm_tb_s,hbm_gb", [
    ("a100-sxm-80gb", 312, 2.039, 81920 * 2**20 / 1e9),
    ("h100-sxm", 989, 3.35, 81559 * 2**20 / 1e9),
    ("h800-sxm", 989, 3.35, 81559 * 2**20 / 1e9),  # NVIDIA's HBM "GB" are binary: NVML reports MiB
    ("h200-sxm", 989, 4.8, 143771 * 2**20 / 1e9),
    ("b200", 2250, 7.7, 180),
    ("mi300x", 1307.4, 5.3, 192),
    ("tpu-v5e", 197, 0.819, 16),
    ("tpu-v5p", 459, 2.765, 95 * 2**30 / 1e9),
])
def test_reference_figures(name, bf16_tflops, hbm_tb_s, hbm_gb):
    a = load_accelerator(name)
    assert a.peak("bf16") == pytest.approx(bf16_tflops * 1e12)
    assert a.hbm_bw == pytest.approx(hbm_tb_s * 1e12)
    assert a.hbm_bytes == pytest.approx(hbm_gb * 1e9)


@pytest.mark.parametrize("name,dtype,tflops", [
    ("h100-sxm", "fp8", 1979), ("h800-sxm", "fp8", 1979), ("h200-sxm", "fp8", 1979),
    ("b200", "fp8", 4500), ("b200", "fp4", 9000), ("mi300x", "fp8", 2614.9), ("a100-sxm-80gb", "int8", 624),
    ("tpu-v5e", "int8", 393), ("tpu-v5p", "int8", 918),
])
def test_reference_low_precision(name, dtype, tflops):
    assert load_accelerator(name).peak(dtype) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name,gb_s", [
    ("nvlink3", 300), ("nvlink4", 450), ("nvlink4-h800", 200), ("nvlink5", 900),
    ("pcie4", 32), ("pcie5", 64), ("ib-hdr", 25), ("ib-ndr", 50), ("roce-400g", 50),
    ("hccs", 56), ("infinity-fabric", 64), ("unified-bus", 392),
])
def test_link_per_direction_bandwidth(name, gb_s):
    assert load_link(name).bw == pytest.approx(gb_s * 1e9)


@pytest.mark.parametrize("name,up_gb_s,out_gb_s", [
    ("dgx-a100", 300, 25), ("dgx-h100", 450, 50), ("hgx-h800", 200, 50), ("hgx-h200", 450, 50),
    ("hgx-b200", 900, 50), ("mi300x-platform", 7 * 64, 50), ("atlas-800-910b", 7 * 56, 25),
    ("cloudmatrix384", 392, 50), ("tpu-v5p-slice", 600, 0), ("tpu-v5e-pod-slice", 200, 0),
])
def test_node_bandwidths(name, up_gb_s, out_gb_s):
    n = load_node(name)
    assert n.scale_up_bw == pytest.approx(up_gb_s * 1e9)
    assert n.scale_out_bw == pytest.approx(out_gb_s * 1e9)


def test_measured_efficiencies():
    assert load_link("nvlink4").efficiency.value == pytest.approx(380 / 450, abs=0.01)
    assert 0.76 <= load_link("nvlink4-h800").efficiency.value <= 0.8  # DeepEP 153-158 of 200
    assert 0.8 <= load_link("ib-ndr").efficiency.value <= 1.0  # DeepEP 43 of 50


def test_specific_shapes():
    assert load_node("tpu-v5p-slice").spec.scale_up.torus_dims == [4, 4, 4]
    assert load_node("cloudmatrix384").devices == 384
    assert load_cluster("h800-ep").num_devices == 64
    assert load_accelerator("h800-sxm").peak_flops["bf16"].value == load_accelerator("h100-sxm").peak_flops["bf16"].value


@pytest.mark.parametrize("alias,name", [
    ("h100", "h100-sxm"), ("b200-sxm", "b200"), ("910b", "ascend-910b"), ("910c", "ascend-910c"),
    ("h800", "h800-sxm"), ("mi300", "mi300x"), ("v5p", "tpu-v5p"),
    # AIConfigurator's system folder names (underscores) resolve to the same descriptors
    ("h100_sxm", "h100-sxm"), ("a100_sxm", "a100-sxm-80gb"), ("b200_sxm", "b200"), ("h200_sxm", "h200-sxm"),
    ("gb200_sxm", "gb200"), ("h20_sxm", "h20"), ("H800_SXM", "h800-sxm"),
])
def test_aliases(alias, name):
    assert load_accelerator(alias).name == name


def test_no_invented_tdp():
    """Vendors that publish no TDP get none (tdp is optional); NaN through tdp_watts."""
    for name in ("tpu-v5e", "tpu-v5p", "ascend-910c"):
        a = load_accelerator(name)
        assert a.tdp is None and a.tdp_watts != a.tdp_watts
    assert load_accelerator("h100-sxm").tdp_watts == 700


# ------------------------------------------------------------------ CLI

def test_cli_list_json(capsys):
    code, out, err = run_cli(["hw", "list", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"accelerators", "links", "nodes", "clusters"}
    h100 = next(r for r in data["accelerators"] if r["name"] == "h100-sxm")
    assert h100["bf16_flops"] == pytest.approx(989e12)
    assert h100["hbm_bytes_per_s"] == pytest.approx(3.35e12)


@pytest.mark.parametrize("kind", ["accelerators", "links", "nodes", "clusters"])
def test_cli_list_tables(kind, capsys):
    code, out, err = run_cli(["hw", "list", "--kind", kind], capsys)
    assert code == 0, err
    assert HW[kind][0] in out


def test_cli_show_h100_json(capsys):
    code, out, err = run_cli(["hw", "show", "h100", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["descriptor"] == "accelerator" and d["name"] == "h100-sxm"
    bf16 = d["peak_flops"]["bf16"]
    assert bf16["value"] == pytest.approx(989e12) and bf16["unit"] == "FLOP/s" and bf16["source"]
    assert d["memory_bandwidth"]["value"] == pytest.approx(3.35e12)


def test_cli_show_node_resolves(capsys):
    code, out, err = run_cli(["hw", "show", "hgx-h800", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["descriptor"] == "node"
    assert d["resolved"]["accelerator"]["name"] == "h800-sxm"
    assert d["resolved"]["scale_up_link"]["bandwidth_per_direction"]["value"] == pytest.approx(200e9)
    assert d["resolved"]["scale_out_link"]["name"] == "ib-ndr"


def test_cli_show_cluster_and_link(capsys):
    code, out, err = run_cli(["hw", "show", "h800-ep", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["num_devices"] == 64 and d["resolved"]["node"]["resolved"]["accelerator"]["name"] == "h800-sxm"
    code, out, err = run_cli(["hw", "show", "nvlink4"], capsys)
    assert code == 0 and "450" in out


@pytest.mark.parametrize("verb", [["hw"], ["hw", "list"], ["hw", "show"]])
def test_cli_help(verb, capsys):
    code, out, err = run_cli(verb + ["--help"], capsys)
    assert code == 0 and "Usage" in out


def test_cli_unknown_name(capsys):
    code, out, err = run_cli(["hw", "show", "h1000"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "h1000" in err and "unknown" in err


# ------------------------------------------------------------------ bad descriptors

GOOD_ACCEL = (REPO / "hardware/accelerators/h100-sxm.yaml").read_text()
GOOD_LINK = (REPO / "hardware/links/nvlink4.yaml").read_text()
GOOD_NODE = (REPO / "hardware/nodes/dgx-h100.yaml").read_text()


def _bad(tmp_path, kind, text):
    d = tmp_path / kind
    d.mkdir(exist_ok=True)
    p = d / "bad.yaml"
    p.write_text(text)
    return p


BAD_CASES = {
    "missing_field": ("accelerators", "\n".join(l for l in GOOD_ACCEL.splitlines()
                                                 if not l.startswith("memory_bandwidth")),
                      ["memory_bandwidth", "missing"]),
    "unknown_unit": ("accelerators", GOOD_ACCEL.replace("3.35 TB/s", "3.35 TQ/s"),
                     ["memory_bandwidth", "unknown unit"]),
    "no_source": ("accelerators", GOOD_ACCEL.replace(
        'sram: {value: 50 MiB, source: "NVIDIA H100 Hopper architecture whitepaper: 50 MB L2 cache"}',
        "sram: {value: 50 MiB}"), ["sram", "source"]),
    "negative_bandwidth": ("links", GOOD_LINK.replace("value: 450 GB/s", "value: -450 GB/s"),
                           ["bandwidth_per_direction", "negative"]),
    "unknown_dtype": ("accelerators", GOOD_ACCEL.replace("  fp32:", "  fp12:"), ["peak_flops", "fp12"]),
    "malformed_yaml": ("accelerators", "name: x\npeak_flops: {bf16: [oops\n", ["malformed YAML"]),
    "unknown_accelerator": ("nodes", GOOD_NODE.replace("accelerator: h100-sxm", "accelerator: h1000"),
                            ["accelerator", "h1000"]),
    "unknown_link": ("nodes", GOOD_NODE.replace("link: nvlink4,", "link: nvlink9,"), ["scale_up.link", "nvlink9"]),
    "bad_torus": ("nodes", GOOD_NODE.replace("topology: switch", "topology: torus, torus_dims: [2, 2]"),
                  ["torus_dims"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_descriptor_cli(case, tmp_path, capsys):
    kind, text, needles = BAD_CASES[case]
    path = _bad(tmp_path, kind, text)
    code, out, err = run_cli(["hw", "show", str(path)], capsys)
    assert code == 2, (out, err)
    line = err.strip()
    assert "\n" not in line, line
    assert str(path) in line
    for n in needles:
        assert n in line, line


def test_bad_descriptor_loader_names_file_and_field(tmp_path):
    path = _bad(tmp_path, "links", GOOD_LINK.replace("value: 450 GB/s", "value: -450 GB/s"))
    with pytest.raises(InputError) as e:
        load_link(str(path))
    assert e.value.file == str(path) and e.value.field == "bandwidth_per_direction"


def test_kind_guessed_from_keys(tmp_path, capsys):
    """A descriptor outside a kind folder is recognised by its fields."""
    p = tmp_path / "mine.yaml"
    p.write_text(GOOD_LINK.replace("name: nvlink4", "name: mine"))
    code, out, err = run_cli(["hw", "show", str(p), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["descriptor"] == "link"
