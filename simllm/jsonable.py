"""``jsonable(obj)``: a copy of ``obj`` that ``json.dumps`` writes as valid JSON (NaN/inf -> null, numpy scalars
-> Python numbers, tuples -> lists, keys -> strings). Used by the library's writers and by the CLI."""

from __future__ import annotations

import math
from typing import Any


def jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return jsonable(obj.item())
    return obj
