"""Readers of published LLM request-trace formats into one tidy table.

Every reader returns a :class:`Trace`: a pandas DataFrame with the columns

``arrival_s`` (float, seconds from the first request), ``prompt_tokens`` (int >= 1),
``output_tokens`` (int >= 1) and, where the format has them, ``session_id`` (str),
``prefix_blocks`` (tuple of int) and ``model`` (str); plus a count of the rows dropped
and why.

Formats (``format:`` in a workload block, ``--format`` on the command line):

========== ======================================================================
burstgpt   BurstGPT CSV as published: ``Timestamp`` (s), ``Model``, ``Request tokens``,
           ``Response tokens``, ``Total tokens``, ``Log Type``, optionally
           ``Session ID``, ``Elapsed time``. Rows with ``Response tokens == 0`` are
           failed requests: always dropped and counted (``failed``).
azure      Azure LLM inference trace 2023: ``TIMESTAMP`` (wall clock,
           ``2023-11-16 18:17:03.9799600``), ``ContextTokens``, ``GeneratedTokens``.
mooncake   Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``,
           ``hash_ids`` (one id per 512-token block) -> ``prefix_blocks``.
vidur      Plain CSV ``arrived_at`` (s), ``num_prefill_tokens``, ``num_decode_tokens``.
========== ======================================================================

Input as people have it: ``path`` may be ``-`` (standard input); gzip and zstd files
(told by their magic bytes, whatever the name) are decompressed; a UTF-8 byte-order mark and
CRLF line ends are accepted. A ``vllm bench serve --save-result`` JSON (per-request latencies,
no arrival times) is recognised and refused with a message rather than read as Mooncake.
:func:`read_trace` records in ``Trace.detected`` how the format was chosen.

Malformed rows (non-numeric or negative token counts, unreadable timestamps, bad JSON)
raise a one-line :class:`InputError` naming the file, the column and the row
(``on_error="raise"``, the default) or are dropped and counted (``on_error="skip"``).
Unsorted timestamps raise unless ``sort=True``. Token counts of 0 (other than BurstGPT's
failed responses) are raised to 1 and counted (``zero_tokens_clipped``), since a request
always has at least one prompt and one output token.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import pandas as pd

from ..errors import InputError
from .generators import MAX_TOKENS

OnError = Literal["raise", "skip"]

FORMATS = ("burstgpt", "azure", "mooncake", "vidur")

# columns that identify each CSV format (auto-detection)
_SIGNATURES: dict[str, tuple[str, ...]] = {
    "burstgpt": ("Timestamp", "Request tokens", "Response tokens"),
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "vidur": ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
    "mooncake": ("timestamp", "input_length", "output_length"),
}

BLOCK_TOKENS = 512
"""Tokens per prefix block in Mooncake's ``hash_ids`` (and in generated sessions)."""


@dataclass
class Trace:
    """A loaded trace: the table, where it came from and what was dropped."""

    df: pd.DataFrame
    source: str
    format: str
    dropped: dict[str, int] = field(default_factory=dict)
    detected: str = ""  # how the format was chosen ("given", or what detection saw)

    def __len__(self) -> int:
        return len(self.df)

    @property
    def duration_s(self) -> float:
        return float(self.df["arrival_s"].iloc[-1] - self.df["arrival_s"].iloc[0]) if len(self.df) else 0.0


# --------------------------------------------------------------------------- helpers


_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"


def load_bytes(path: str | Path) -> bytes:
    """The bytes of a trace: ``-`` reads standard input; gzip / zstd are decompressed; a BOM is dropped."""
    p = Path(path)
    if str(path) == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    else:
        if not p.is_file():
            raise InputError("trace file not found", file=p)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read: {e.strerror or e}", file=p) from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise InputError(f"corrupt gzip data: {e}", file=p) from None
    elif data[:4] == _ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:
            raise InputError("zstd-compressed trace: reading it needs the zstandard package "
                             "(pip install zstandard), or decompress it first (zstd -d)", file=p) from None
        parts = []
        try:
            while data:  # frame by frame (zstd files may be concatenated frames)
                d = zstandard.ZstdDecompressor().decompressobj()
                parts.append(d.decompress(data))
                if not d.eof:
                    raise InputError("truncated zstd data: the last frame is incomplete", file=p)
                data = d.unused_data
        except zstandard.ZstdError as e:
            raise InputError(f"corrupt zstd data: {e}", file=p) from None
        data = b"".join(parts)
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    return data


def _bytes(path: Path, data: Optional[bytes]) -> bytes:
    return load_bytes(path) if data is None else data


def _count(dropped: dict[str, int], key: str, n: int) -> None:
    if n:
        dropped[key] = dropped.get(key, 0) + int(n)


def _require_columns(df: pd.DataFrame, cols: tuple[str, ...], path: Path, fmt: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} "
            f"for format {fmt!r} (expected {', '.join(cols)}; found {', '.join(map(str, df.columns)) or 'none'})",
            file=path,
        )


def _numeric(df: pd.DataFrame, col: str, *, path: Path, on_error: OnError, bad: np.ndarray,
             what: str, lines: np.ndarray, allow_negative: bool = False) -> np.ndarray:
    """Column as float64; marks unreadable/negative entries in ``bad`` or raises on the first.

    ``lines[i]`` is the line in the file of row ``i`` (for the error message)."""
    raw = df[col]
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    invalid = ~np.isfinite(vals)
    if not allow_negative:
        invalid |= vals < 0
    if "integer" in what:  # token counts must be whole numbers, within what a request can hold
        invalid |= np.isfinite(vals) & ((vals != np.round(vals)) | (vals > MAX_TOKENS))
    if invalid.any():
        if on_error == "raise":
            i = int(np.flatnonzero(invalid)[0])
            raise InputError(f"line {int(lines[i])}: expected {what}, got {raw.iloc[i]!r}", file=path, field=col)
        bad |= invalid
    return vals


def _finish(path: Path, fmt: str, arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray,
            bad: np.ndarray, dropped: dict[str, int], *, sort: bool, lines: np.ndarray,
            extra: Optional[dict[str, object]] = None) -> Trace:
    """Drop bad rows, check order, clip zeros, shift time to start at 0."""
    keep = ~bad
    _count(dropped, "malformed", int(bad.sum()))
    arrival, prompt, output = arrival[keep], prompt[keep], output[keep]
    lines = np.asarray(lines)[keep]
    extra = {k: (np.asarray(v, dtype=object)[keep] if not isinstance(v, np.ndarray) else v[keep])
             for k, v in (extra or {}).items()}
    if len(arrival) == 0:
        what = ", ".join(f"{v} {k}" for k, v in dropped.items())
        raise InputError(f"empty trace: no requests{f' left ({what} rows dropped)' if what else ''}", file=path)
    d = np.diff(arrival)
    if (d < 0).any():
        if not sort:
            i = int(np.flatnonzero(d < 0)[0]) + 1
            raise InputError(
                f"line {int(lines[i])}: timestamps are not sorted ({arrival[i]:.6g} after "
                f"{arrival[i - 1]:.6g}); set sort: true (--sort) to sort them",
                file=path,
            )
        order = np.argsort(arrival, kind="stable")
        arrival, prompt, output = arrival[order], prompt[order], output[order]
        extra = {k: v[order] for k, v in extra.items()}
    huge = ~((prompt <= MAX_TOKENS) & (output <= MAX_TOKENS))  # also NaN from a reader that let it through
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise InputError(f"line {int(lines[i])}: token counts {prompt[i]:.6g} / {output[i]:.6g} exceed the "
                         f"{MAX_TOKENS:,} tokens a request may hold", file=path)
    zeros = (prompt < 1) | (output < 1)
    _count(dropped, "zero_tokens_clipped", int(zeros.sum()))
    df = pd.DataFrame({
        "arrival_s": arrival - arrival[0],
        "prompt_tokens": np.maximum(prompt, 1).astype(np.int64),
        "output_tokens": np.maximum(output, 1).astype(np.int64),
    })
    for k, v in extra.items():
        df[k] = v
    return Trace(df=df, source=str(path), format=fmt, dropped=dropped)


def _read_csv(path: Path, data: Optional[bytes] = None, on_error: OnError = "raise",
              dropped: Optional[dict[str, int]] = None) -> pd.DataFrame:
    """CSV as strings; with ``on_error="skip"``, rows with too many fields are dropped and counted."""
    buf = io.BytesIO(_bytes(path, data))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = pd.read_csv(buf, skipinitialspace=True, dtype=str, keep_default_na=False, na_values=[""],
                             encoding="utf-8", on_bad_lines="warn" if on_error == "skip" else "error")
        n_bad = sum(str(w.message).count("Skipping line") for w in caught)
        if n_bad and dropped is not None:
            _count(dropped, "malformed", n_bad)
    except pd.errors.EmptyDataError:
        raise InputError("empty trace: the file has no header and no rows", file=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise InputError(f"malformed CSV: {msg}", file=path) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _fast_columns(data: bytes, types: dict[str, str]) -> Optional[dict[str, np.ndarray]]:
    """The named columns of a well-formed CSV, parsed in C by pyarrow (``types``: column -> ``float64`` or
    ``timestamp``), as int64 nanoseconds / float64 arrays; None when anything is unusual (other columns
    are not read). Callers then take the careful pandas path, which reports or skips the bad rows."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
    except ImportError:
        return None
    at = {c: (pa.timestamp("ns") if t == "timestamp" else pa.float64()) for c, t in types.items()}
    try:
        tbl = pcsv.read_csv(io.BytesIO(data), convert_options=pcsv.ConvertOptions(
            column_types=at, include_columns=list(types), strings_can_be_null=False),
            memory_pool=pa.system_memory_pool())  # freed buffers go back to malloc, not kept by arrow's pool
    except (pa.ArrowInvalid, pa.ArrowKeyError, pa.ArrowNotImplementedError, pa.ArrowTypeError, KeyError, ValueError):
        return None
    if tbl.num_rows == 0:
        return None  # the careful path says what is wrong with an empty file
    out = {}
    for c, t in types.items():
        col = tbl.column(c)
        if col.null_count:
            return None
        a = col.to_numpy()
        out[c] = a.astype("datetime64[ns]").astype(np.int64) if t == "timestamp" else a.astype(np.float64)
    return out


def _clean_counts(*cols: np.ndarray) -> bool:
    """Every value a finite, whole, non-negative token count of at most ``MAX_TOKENS``."""
    return all(bool(np.isfinite(v).all() and (v >= 0).all() and (v <= MAX_TOKENS).all() and (v == np.round(v)).all())
               for v in cols)


# --------------------------------------------------------------------------- readers


def read_burstgpt(path: Path, *, on_error: OnError = "raise", sort: bool = False,
                  model: Optional[str] = None, log_type: Optional[str] = None, data: Optional[bytes] = None) -> Trace:
    """BurstGPT CSV; ``model`` / ``log_type`` filter on ``Model`` / ``Log Type`` (case-insensitive)."""
    dropped: dict[str, int] = {}
    df = _read_csv(path, data, on_error, dropped)
    _require_columns(df, _SIGNATURES["burstgpt"], path, "burstgpt")
    for col, want in (("Model", model), ("Log Type", log_type)):
        if want is None:
            continue
        if col not in df.columns:
            raise InputError(f"cannot filter on {col!r}: the file has no such column", file=path, field=col)
        sel = df[col].astype(str).str.strip().str.lower() == str(want).strip().lower()
        if not sel.any():
            known = sorted(df[col].dropna().astype(str).str.strip().unique())[:10]
            raise InputError(f"no rows with {col} = {want!r} (found: {', '.join(known)})", file=path, field=col)
        _count(dropped, f"filtered_{col.lower().replace(' ', '_')}", int((~sel).sum()))
        df = df[sel]
    lines = df.index.to_numpy() + 2  # line in the file of each remaining row (header is line 1)
    df = df.reset_index(drop=True)
    bad = np.zeros(len(df), dtype=bool)
    kw = dict(path=path, on_error=on_error, bad=bad, lines=lines)
    ts = _numeric(df, "Timestamp", what="a time in seconds", **kw)
    req = _numeric(df, "Request tokens", what="an integer token count >= 0", **kw)
    resp = _numeric(df, "Response tokens", what="an integer token count >= 0", **kw)
    failed = (resp == 0) & ~bad
    _count(dropped, "failed", int(failed.sum()))
    keep = ~failed
    extra: dict[str, object] = {}
    if "Model" in df.columns:
        extra["model"] = df["Model"].astype(str).str.strip().to_numpy(dtype=object)[keep]
    if "Session ID" in df.columns:
        sid = df["Session ID"].str.strip()
        sid_a = sid.to_numpy(dtype=object)
        sid_a[~(sid.notna() & (sid != "")).to_numpy()] = None
        extra["session_id"] = sid_a[keep]
    return _finish(path, "burstgpt", ts[keep], req[keep], resp[keep], bad[keep], dropped, sort=sort,
                   lines=lines[keep], extra=extra)


def read_azure(path: Path, *, on_error: OnError = "raise", sort: bool = False, data: Optional[bytes] = None) -> Trace:
    """Azure LLM inference trace (2023/2024): wall-clock ``TIMESTAMP`` -> seconds from the first row."""
    dropped: dict[str, int] = {}
    fast = _fast_columns(_bytes(path, data), {"TIMESTAMP": "timestamp", "ContextTokens": "float64",
                                              "GeneratedTokens": "float64"})
    if fast is not None and _clean_counts(fast["ContextTokens"], fast["GeneratedTokens"]):
        t_ns = fast["TIMESTAMP"]
        return _finish(path, "azure", (t_ns - t_ns[0]) / 1e9, fast["ContextTokens"], fast["GeneratedTokens"],
                       np.zeros(len(t_ns), dtype=bool), dropped, sort=sort, lines=np.arange(len(t_ns)) + 2)
    df = _read_csv(path, data, on_error, dropped)
    _require_columns(df, _SIGNATURES["azure"], path, "azure")
    bad = np.zeros(len(df), dtype=bool)
    raw = df["TIMESTAMP"].astype(str).str.strip()
    ts = pd.to_datetime(raw, format="%Y-%m-%d %H:%M:%S.%f", errors="coerce")
    if ts.isna().any():  # whole seconds, or ISO 'T' forms
        alt = pd.to_datetime(raw[ts.isna()], format="ISO8601", errors="coerce", utc=True).dt.tz_localize(None)
        ts = ts.copy()
        ts[ts.isna()] = alt
    inv = ts.isna().to_numpy()
    if inv.any():
        if on_error == "raise":
            i = int(np.flatnonzero(inv)[0])
            raise InputError(f"line {i + 2}: expected a timestamp like '2023-11-16 18:17:03.9799600', "
                             f"got {df['TIMESTAMP'].iloc[i]!r}", file=path, field="TIMESTAMP")
        bad |= inv
    t_ns = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)  # NaT -> min int64, masked by ``bad``
    t0 = t_ns[~inv][0] if (~inv).any() else 0
    arrival = np.where(inv, np.nan, (t_ns - t0) / 1e9)
    kw = dict(path=path, on_error=on_error, bad=bad, lines=np.arange(len(df)) + 2)
    prompt = _numeric(df, "ContextTokens", what="an integer token count >= 0", **kw)
    output = _numeric(df, "GeneratedTokens", what="an integer token count >= 0", **kw)
    return _finish(path, "azure", arrival, prompt, output, bad, dropped, sort=sort, lines=kw["lines"])


def read_vidur(path: Path, *, on_error: OnError = "raise", sort: bool = False, data: Optional[bytes] = None) -> Trace:
    """Vidur-style CSV: ``arrived_at`` (s), ``num_prefill_tokens``, ``num_decode_tokens``."""
    dropped: dict[str, int] = {}
    fast = _fast_columns(_bytes(path, data), {"arrived_at": "float64", "num_prefill_tokens": "float64",
                                              "num_decode_tokens": "float64"})
    if (fast is not None and np.isfinite(fast["arrived_at"]).all() and (fast["arrived_at"] >= 0).all()
            and _clean_counts(fast["num_prefill_tokens"], fast["num_decode_tokens"])):
        n = len(fast["arrived_at"])
        return _finish(path, "vidur", fast["arrived_at"], fast["num_prefill_tokens"], fast["num_decode_tokens"],
                       np.zeros(n, dtype=bool), dropped, sort=sort, lines=np.arange(n) + 2)
    df = _read_csv(path, data, on_error, dropped)
    _require_columns(df, _SIGNATURES["vidur"], path, "vidur")
    bad = np.zeros(len(df), dtype=bool)
    kw = dict(path=path, on_error=on_error, bad=bad, lines=np.arange(len(df)) + 2)
    arrival = _numeric(df, "arrived_at", what="a time in seconds", **kw)
    prompt = _numeric(df, "num_prefill_tokens", what="an integer token count >= 0", **kw)
    output = _numeric(df, "num_decode_tokens", what="an integer token count >= 0", **kw)
    return _finish(path, "vidur", arrival, prompt, output, bad, dropped, sort=sort, lines=kw["lines"])


def read_mooncake(path: Path, *, on_error: OnError = "raise", sort: bool = False, data: Optional[bytes] = None
                  ) -> Trace:
    """Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``."""
    raw = _bytes(path, data)
    _refuse_vllm_bench(raw, path)
    raw_lines = raw.splitlines()
    lines = [i + 1 for i, ln in enumerate(raw_lines) if ln.strip()]
    dropped: dict[str, int] = {}
    if not lines:
        raise InputError("empty trace: no requests", file=path)
    try:  # fast path: the whole file in one C call
        objs = json.loads(b"[" + b",".join(raw_lines[i - 1] for i in lines) + b"]")
    except (json.JSONDecodeError, UnicodeDecodeError):
        objs, keep_lines = [], []
        for ln in lines:
            try:
                objs.append(json.loads(raw_lines[ln - 1]))
                keep_lines.append(ln)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if on_error == "raise":
                    raise InputError(f"line {ln}: malformed JSON ({getattr(e, 'msg', e)})", file=path) from None
                _count(dropped, "malformed", 1)
        lines = keep_lines
        if not objs:
            raise InputError(f"empty trace: no requests left ({dropped['malformed']} malformed lines dropped)",
                             file=path)
    lines_a = np.asarray(lines)
    not_obj = [i for i, o in enumerate(objs) if not isinstance(o, dict)]
    if not_obj:
        if on_error == "raise":
            raise InputError(f"line {lines[not_obj[0]]}: expected a JSON object", file=path)
        _count(dropped, "malformed", len(not_obj))
        keep = np.ones(len(objs), bool)
        keep[not_obj] = False
        objs = [o for o, k in zip(objs, keep) if k]
        lines_a = lines_a[keep]
    df = pd.DataFrame.from_records(objs)
    if df.empty:
        raise InputError("empty trace: no requests", file=path)
    _require_columns(df, _SIGNATURES["mooncake"], path, "mooncake")
    bad = np.zeros(len(df), dtype=bool)
    kw = dict(path=path, on_error=on_error, bad=bad, lines=lines_a)
    ts = _numeric(df, "timestamp", what="a time in milliseconds", **kw)
    inp = _numeric(df, "input_length", what="an integer token count >= 0", **kw)
    out = _numeric(df, "output_length", what="an integer token count >= 0", **kw)
    bl = np.empty(len(df), dtype=object)
    if "hash_ids" in df.columns:
        for i, h in enumerate(df["hash_ids"].tolist()):
            if isinstance(h, list):
                bl[i] = tuple(h)
            elif h is None or (isinstance(h, float) and np.isnan(h)):
                bl[i] = ()
            else:
                if on_error == "raise":
                    raise InputError(f"line {lines_a[i]}: expected a list of integer block ids, got {h!r}",
                                     file=path, field="hash_ids")
                bad[i] = True
                bl[i] = ()
    else:
        bl[:] = [()] * len(df)
    return _finish(path, "mooncake", ts / 1000.0, inp, out, bad, dropped, sort=sort, lines=lines_a,
                   extra={"prefix_blocks": bl})


_READERS: dict[str, Callable[..., Trace]] = {
    "burstgpt": read_burstgpt,
    "azure": read_azure,
    "mooncake": read_mooncake,
    "vidur": read_vidur,
}


_VLLM_BENCH_KEYS = {"input_lens", "output_lens", "ttfts", "itls", "num_prompts", "request_throughput"}


def _refuse_vllm_bench(raw: bytes, path: Path) -> None:
    """A ``vllm bench serve --save-result`` file is one JSON object of per-run lists, not a JSONL trace."""
    head = raw.lstrip()[:1]
    if head != b"{":
        return
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return  # several objects (JSONL) or broken: not a single result document
    if isinstance(obj, dict) and len(_VLLM_BENCH_KEYS & set(obj)) >= 2:
        raise InputError("this is a vLLM benchmark result (vllm bench serve --save-result: per-request latencies "
                         "without arrival times), not a request trace; replay its dataset instead, or give a "
                         "Mooncake JSONL / BurstGPT / Azure / Vidur trace", file=path)


def detect_format(path: str | Path, data: Optional[bytes] = None) -> str:
    """Guess a trace's format from its extension and header (first line)."""
    return _detect(Path(path), data)[0]


def _detect(p: Path, data: Optional[bytes]) -> tuple[str, str]:
    """(format, how it was told)."""
    raw = _bytes(p, data)
    name = p.name.lower()
    for ext in (".gz", ".zst", ".zstd"):
        name = name[: -len(ext)] if name.endswith(ext) else name
    first = raw.split(b"\n", 1)[0]
    head = first.decode("utf-8", errors="replace").strip()
    if Path(name).suffix in (".jsonl", ".json", ".ndjson") or head.startswith("{"):
        _refuse_vllm_bench(raw, p)
        return "mooncake", ("JSON lines" if head.startswith("{") else f"extension {Path(name).suffix}")
    if not head:
        raise InputError("empty trace: the file has no header and no rows", file=p)
    cols = {c.strip().strip('"') for c in head.split(",")}
    for fmt, sig in _SIGNATURES.items():
        if fmt != "mooncake" and set(sig) <= cols:
            return fmt, f"header columns {', '.join(sig)}"
    raise InputError(
        f"cannot tell the trace format from the header {head[:80]!r}; give format: one of "
        f"{', '.join(FORMATS)} (burstgpt: Timestamp, Request tokens, Response tokens; azure: TIMESTAMP, "
        f"ContextTokens, GeneratedTokens; vidur: arrived_at, num_prefill_tokens, num_decode_tokens; "
        f"mooncake: .jsonl)",
        file=p,
    )


def read_trace(path: str | Path, format: Optional[str] = None, *, on_error: OnError = "raise",
               sort: bool = False, model: Optional[str] = None, log_type: Optional[str] = None) -> Trace:
    """Read any supported trace; ``format=None`` detects it from columns and extension."""
    p = Path(path)
    if str(path) != "-" and not p.is_file():
        raise InputError("trace file not found", file=p)
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}", field="on_error")
    data = load_bytes(p)
    fmt, how = (format, "given") if format else _detect(p, data)
    fmt = str(fmt).lower()
    if fmt not in _READERS:
        raise InputError(f"unknown trace format {format!r}; known: {', '.join(FORMATS)}", file=p, field="format")
    if (model or log_type) and fmt != "burstgpt":
        raise InputError("model / log_type filters apply only to BurstGPT traces", file=p, field="model")
    kw: dict = dict(on_error=on_error, sort=sort, data=data)
    if fmt == "burstgpt":
        kw.update(model=model, log_type=log_type)
    tr = _READERS[fmt](p, **kw)
    tr.detected = how
    return tr
