"""One parser for every quantity written by people in YAML or on the command line.

Inside simllm everything is SI: seconds, bytes, FLOP/s, bytes/s, watts, hertz. Descriptors
may write quantities the way datasheets do (``3.35 TB/s``, ``80 GiB``, ``989 TFLOPS``,
``2 us``, ``700 W``, ``400 Gb/s``); :func:`parse_quantity` turns them into floats and rejects
anything it cannot read, and anything of the wrong dimension.

Decimal prefixes (k, M, G, T, P, E) are powers of 1000; binary prefixes (Ki, Mi, Gi, Ti, Pi)
are powers of 1024. ``b``/``bit`` means bits (divided by 8 to give bytes), ``B`` bytes.
"""

from __future__ import annotations

import math
import re

from .errors import InputError

_DEC = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BIN = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}

# dimension -> {unit symbol without prefix: factor to SI}
_UNITS: dict[str, dict[str, float]] = {
    "bytes": {"B": 1.0, "byte": 1.0, "bytes": 1.0, "b": 0.125, "bit": 0.125, "bits": 0.125},
    "bandwidth": {"B/s": 1.0, "Bps": 1.0, "b/s": 0.125, "bps": 0.125, "bit/s": 0.125},
    "flops": {"FLOPS": 1.0, "FLOP/s": 1.0, "flops": 1.0, "OPS": 1.0, "OP/s": 1.0, "TOPS": 1e12},
    "flop": {"FLOP": 1.0, "FLOPs": 1.0, "flop": 1.0},
    "time": {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9,
             "min": 60.0, "h": 3600.0},
    "power": {"W": 1.0},
    "energy": {"J": 1.0, "Wh": 3600.0},
    "frequency": {"Hz": 1.0},
    "price_per_hour": {"USD/h": 1.0, "$/h": 1.0, "USD/hour": 1.0},
    "count": {"": 1.0},
}
# Time units whose prefix is already part of the symbol: no further prefixing.
_NO_PREFIX = {"ms", "us", "µs", "μs", "ns", "min", "h", "TOPS", "sec"}

_NUM = r"[-+]?(?:\d+(?:[_,]\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RE = re.compile(rf"^\s*({_NUM})\s*([A-Za-zµμ$/]*(?:/[A-Za-z]+)?)\s*$")

DIMENSIONS = tuple(_UNITS)


def _factor(unit: str, dimension: str) -> float | None:
    table = _UNITS[dimension]
    if unit in table:
        return table[unit]
    for pfx_table in (_BIN, _DEC):
        for pfx, mult in pfx_table.items():
            if pfx and unit.startswith(pfx):
                base = unit[len(pfx):]
                if base in table and base not in _NO_PREFIX and base:
                    return mult * table[base]
    return None


def parse_quantity(value: object, dimension: str, *, allow_negative: bool = False,
                   allow_zero: bool = True, file: str | None = None, field: str | None = None) -> float:
    """Parse ``value`` (a number or a string with a unit) as a quantity of ``dimension``.

    Plain numbers are taken as already SI. Raises :class:`InputError` naming ``file`` and
    ``field`` when the text cannot be read, the unit does not belong to the dimension, or the
    value is negative (unless ``allow_negative``), zero (unless ``allow_zero``) or not finite.
    """
    if dimension not in _UNITS:
        raise ValueError(f"unknown dimension {dimension!r}")
    if isinstance(value, bool):
        raise InputError(f"expected a {dimension} quantity, got a boolean", file=file, field=field)
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        m = _RE.match(value.replace("\u202f", " "))
        if not m:
            raise InputError(f"cannot read {value!r} as a {dimension} quantity (e.g. {_example(dimension)})",
                             file=file, field=field)
        num_text, unit = m.group(1), m.group(2)
        factor = _factor(unit, dimension)
        if factor is None:
            known = ", ".join(sorted(k for k in _UNITS[dimension] if k)) or "a plain number"
            raise InputError(f"unknown unit {unit!r} in {value!r} for a {dimension} quantity "
                             f"(expected a prefix and one of: {known})", file=file, field=field)
        number = float(num_text.replace("_", "").replace(",", "")) * factor
    else:
        raise InputError(f"expected a {dimension} quantity such as {_example(dimension)}, "
                         f"got {type(value).__name__}", file=file, field=field)
    if not math.isfinite(number):
        raise InputError(f"{value!r} is not finite", file=file, field=field)
    if number < 0 and not allow_negative:
        raise InputError(f"{value!r} must not be negative", file=file, field=field)
    if number == 0 and not allow_zero:
        raise InputError(f"{value!r} must be positive", file=file, field=field)
    return number


def _example(dimension: str) -> str:
    return {
        "bytes": "'80 GiB'", "bandwidth": "'3.35 TB/s'", "flops": "'989 TFLOPS'", "flop": "'1.2 TFLOP'",
        "time": "'2 us'", "power": "'700 W'", "energy": "'1 J'", "frequency": "'1.98 GHz'",
        "price_per_hour": "'2.5 USD/h'", "count": "'132'",
    }[dimension]


def format_quantity(value: float, dimension: str) -> str:
    """Human-readable rendering with a decimal prefix (for tables and ``--help``)."""
    unit = {"bytes": "B", "bandwidth": "B/s", "flops": "FLOP/s", "flop": "FLOP", "time": "s",
            "power": "W", "energy": "J", "frequency": "Hz", "price_per_hour": "USD/h", "count": ""}[dimension]
    if dimension == "time":
        for f, u in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
            if abs(value) >= f or f == 1e-9:
                return f"{value / f:.4g} {u}"
    for pfx, mult in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= mult:
            return f"{value / mult:.4g} {pfx}{unit}"
    return f"{value:.4g} {unit}".strip()
