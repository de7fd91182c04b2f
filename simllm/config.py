"""Loading YAML descriptors into validated, frozen objects.

All user-written configuration enters through :func:`load_yaml` and :func:`validate`, which
turn YAML syntax errors and pydantic validation errors into one-line :class:`InputError`
messages naming the file, the dotted field and what was expected. Everything past this edge
trusts its inputs.

Quantities in descriptors carry their source: ``{value: 3.35 TB/s, source: "NVIDIA H100 datasheet"}``
is read by :func:`sourced` into a :class:`Sourced` (SI float + source text).
"""

from __future__ import annotations

import re
import os
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .errors import InputError, NotFoundError
from .units import parse_quantity

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root of a source checkout (holds ``hardware/``, ``workloads/``, ``traces/``)."""


def shipped_root() -> Path:
    """Where the shipped descriptors, calibrations and sample traces are.

    A source checkout (editable install, ``PYTHONPATH``) reads them in place at the repository
    root; an installed wheel carries them as package data (``simllm._data``, see setup.py),
    found through :mod:`importlib.resources`."""
    if (REPO_ROOT / "hardware").is_dir() and (REPO_ROOT / "simllm").is_dir():
        return REPO_ROOT
    return Path(str(resources.files("simllm") / "_data"))


def data_roots() -> list[Path]:
    """Folders searched for descriptors, first match wins: each folder of ``SIMLLM_DATA``
    (``os.pathsep``-separated, the user's own hardware/, workloads/, traces/ layout), then the shipped data."""
    user = [Path(x) for x in os.environ.get("SIMLLM_DATA", "").split(os.pathsep) if x]
    shipped = shipped_root()
    return user + ([shipped] if shipped not in user else [])


def data_root() -> Path:
    """The first data folder (the user's when ``SIMLLM_DATA`` is set, else the shipped one)."""
    return data_roots()[0]


BOOL_NUMBER = "bool_number"
"""Error type of a YAML boolean given for a number (:class:`Frozen`); :func:`validate` puts its field in the path."""


def _plain_number_type(annotation: Any) -> type | None:
    """``int`` or ``float`` when a field holds a plain number (also inside ``Optional``), else None."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union else (annotation,)
    kinds = {typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
             for a in args if a is not type(None)}
    return kinds.pop() if len(kinds) == 1 and kinds <= {int, float} else None


class Frozen(BaseModel):
    """Base of every validated configuration object: immutable, no unknown fields, no NaN or
    infinity in a float field, and no YAML ``true``/``false`` taken for the number 1/0."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, v in data.items():
                f = cls.model_fields.get(name) if isinstance(name, str) else None
                kind = _plain_number_type(f.annotation) if f is not None and isinstance(v, bool) else None
                if kind is not None:
                    raise PydanticCustomError(BOOL_NUMBER, "expected {kind}, got {value}",
                                              {"field": name, "kind": "an integer" if kind is int else "a number",
                                               "value": str(v).lower()})
        return data


class Sourced(Frozen):
    """A number in SI units together with where it came from."""

    value: float
    source: str
    text: str = ""  # as written in the YAML, for display

    def __float__(self) -> float:  # convenient in arithmetic contexts
        return self.value


def sourced(dimension: str, *, positive: bool = True):
    """Annotated pydantic type for ``{value: <quantity>, source: <text>}``."""

    def _parse(v: Any) -> Any:
        if isinstance(v, Sourced):
            return v
        if not isinstance(v, dict) or "value" not in v:
            raise ValueError(f"expected {{value: <{dimension}>, source: <where the number comes from>}}, got {v!r}")
        src = v.get("source")
        if not isinstance(src, str) or not src.strip():
            raise ValueError("every number needs a non-empty 'source'")
        extra = set(v) - {"value", "source", "note"}
        if extra:
            raise ValueError(f"unexpected keys {sorted(extra)} (allowed: value, source, note)")
        try:
            num = parse_quantity(v["value"], dimension, allow_zero=not positive)
        except InputError as e:
            raise ValueError(e.message) from None
        return Sourced(value=num, source=src.strip(), text=str(v["value"]))

    return Annotated[Sourced, BeforeValidator(_parse)]


def quantity(dimension: str, *, positive: bool = True):
    """Annotated pydantic type for a bare quantity (``'80 GiB'`` or a number) -> float."""

    def _parse(v: Any) -> Any:
        try:
            return parse_quantity(v, dimension, allow_zero=not positive)
        except InputError as e:
            raise ValueError(e.message) from None

    return Annotated[float, BeforeValidator(_parse)]


def set_dotted(cfg: dict, key: str, value: Any, *, file: str | Path | None = None) -> None:
    """Set ``a.b.c`` in nested mappings, creating missing intermediate mappings; a part that meets a list
    is an index into it (``deployment.pools.0.tp``)."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise InputError(f"bad field path {key!r}", file=file)
    cur = cfg
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            where = ".".join(parts[:i])
            if not part.isdigit() or int(part) >= len(cur):
                raise InputError(f"cannot set {key!r}: {where!r} is a list of {len(cur)}; give an index "
                                 f"0..{len(cur) - 1}, got {part!r}", file=file, field=key)
            if last:
                cur[int(part)] = value
                return
            nxt = cur[int(part)]
        else:
            if last:
                cur[part] = value
                return
            nxt = cur.get(part)
            if nxt is None:
                nxt = cur[part] = {}
        if not isinstance(nxt, (dict, list)):
            raise InputError(f"cannot set {key!r}: {'.'.join(parts[:i + 1])!r} is not a mapping", file=file, field=key)
        cur = nxt


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last
    silently, so a repeated ``deployment:`` block would drop the first without a word)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _v in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error follows
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str | Any) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys; raises ``yaml.YAMLError`` for any text it cannot read
    (also integers too long to convert and nesting too deep to construct)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except (ValueError, RecursionError) as e:
        kind = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
        raise yaml.YAMLError(kind) from None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from ``path`` with one-line errors for missing files and bad syntax."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", file=p)
    try:
        with p.open(encoding="utf-8") as f:
            data = parse_yaml(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"malformed YAML{where}: {problem}", file=p) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})", file=p) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", file=p) from None
    if not isinstance(data, dict):
        raise InputError(f"expected a YAML mapping at the top level, got {type(data).__name__}", file=p)
    return data


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: dict, *, file: str | Path | None = None, prefix: str | None = None) -> M:
    """Validate ``data`` into ``model``; the first error becomes a one-line :class:`InputError`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == BOOL_NUMBER:
            loc = f"{loc}.{err['ctx']['field']}" if loc else err["ctx"]["field"]
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        msg = err["msg"]
        for pfx in ("Value error, ", "Assertion failed, "):
            if msg.startswith(pfx):
                msg = msg[len(pfx):]
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        n = len(e.errors())
        more = f" (and {n - 1} more error{'s' if n > 2 else ''})" if n > 1 else ""
        raise InputError(msg + more, file=file, field=loc or None) from None


def resolve(kind_dir: str, name_or_path: str | Path, *, what: str) -> Path:
    """Find a descriptor by name (``h100-sxm`` -> ``<data>/<kind_dir>/h100-sxm.yaml``) or by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise InputError(f"{what} file not found", file=p)
        return p
    key = str(name_or_path).lower()
    norm = re.sub(r"[\s_]+", "-", key.strip())  # AIConfigurator's folder names: h100_sxm -> h100-sxm
    for d in data_roots():
        for k in dict.fromkeys((key, norm)):
            for cand in (d / kind_dir / f"{k}.yaml", d / kind_dir / f"{k}.yml"):
                if cand.is_file():
                    return cand
    names = list_names(kind_dir)
    # also match the 'name:' or 'aliases:' inside the files
    for f in [f for d in data_roots() for f in sorted((d / kind_dir).glob("*.y*ml"))]:
        try:
            data = yaml.safe_load(f.read_text()) or {}
        except yaml.YAMLError:
            continue
        aliases = [str(a).lower() for a in ([data.get("name")] + list(data.get("aliases") or [])) if a]
        if key in aliases or norm in aliases:
            return f
    raise NotFoundError(f"unknown {what} {str(name_or_path)!r}; known: {', '.join(names) or '(none)'}")


def list_names(kind_dir: str) -> list[str]:
    """Names of the descriptors under ``kind_dir`` in every data folder (user folders add to the shipped)."""
    return sorted({f.stem for d in data_roots() if (d / kind_dir).is_dir() for f in (d / kind_dir).glob("*.y*ml")})
