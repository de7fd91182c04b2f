import math

import pytest
from hypothesis import given, strategies as st

from simllm.errors import InputError
from simllm.units import parse_quantity


@pytest.mark.parametrize("text,dim,expected", [
    ("3.35 TB/s", "bandwidth", 3.35e12),
    ("80 GiB", "bytes", 80 * 2**30),
    ("80 GB", "bytes", 80e9),
    ("989 TFLOPS", "flops", 989e12),
    ("1,979 TFLOPS", "flops", 1979e12),
    ("624 TOPS", "flops", 624e12),
    ("2 us", "time", 2e-6),
    ("1.5 ms", "time", 1.5e-3),
    ("400 Gb/s", "bandwidth", 50e9),  # bits -> bytes
    ("700 W", "power", 700.0),
    ("50 MiB", "bytes", 50 * 2**20),
    ("2.5 USD/h", "price_per_hour", 2.5),
    (42, "count", 42.0),
])
def test_parse(text, dim, expected):
    assert parse_quantity(text, dim) == pytest.approx(expected)


@pytest.mark.parametrize("text,dim,needle", [
    ("3 XB/s", "bandwidth", "unknown unit"),
    ("fast", "bandwidth", "cannot read"),
    ("-1 GB/s", "bandwidth", "negative"),
    ("80 GB", "bandwidth", "unknown unit"),  # wrong dimension
    ("2 us", "bytes", "unknown unit"),
    (True, "count", "boolean"),
    ([1], "count", "expected"),
])
def test_rejects(text, dim, needle):
    with pytest.raises(InputError) as ei:
        parse_quantity(text, dim, file="x.yaml", field="f")
    msg = str(ei.value)
    assert msg.startswith("x.yaml: f: ") and needle in msg and "\n" not in msg


@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False),
       st.sampled_from([("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("Ki", 1024.0), ("Gi", 2.0**30)]))
def test_prefix_scaling(x, pfx):
    p, mult = pfx
    assert math.isclose(parse_quantity(f"{x!r} {p}B", "bytes"), x * mult, rel_tol=1e-9)
