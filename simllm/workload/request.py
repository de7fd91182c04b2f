"""The unit of work the simulator serves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request.

    ``arrival_s`` is seconds from the start of the trace; token counts are integers >= 1
    (prompt) and >= 1 (output). ``prefix_blocks`` are hash ids of fixed-size prompt blocks
    (Mooncake: one id per 512 tokens; equal ids mean equal prefix content).
    """

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    session_id: Optional[str] = None
    prefix_blocks: tuple[int, ...] = field(default=())
    model: Optional[str] = None
    priority: int = 0


class RequestTable(Sequence):
    """Requests as columns: one array per field, ids 0..n-1 in arrival order, no object per request.

    What a large trace becomes (a million requests are ~30 MB of arrays instead of ~200 MB of
    :class:`Request` objects); the simulator reads the arrays directly. It is still a sequence of
    :class:`Request` (made on access) and equals another table or list with the same requests.
    ``session_id`` / ``model`` (str or None per request) and ``prefix_blocks`` (tuple per request)
    are lists, or None when the trace has no such column."""

    __slots__ = ("ids", "arrival_s", "prompt_tokens", "output_tokens", "priority", "session_id", "prefix_blocks",
                 "model")

    def __init__(self, arrival_s, prompt_tokens, output_tokens, *, session_id: Optional[list] = None,
                 prefix_blocks: Optional[list] = None, model: Optional[list] = None, priority=None):
        self.arrival_s = np.ascontiguousarray(arrival_s, dtype=np.float64)
        n = len(self.arrival_s)
        self.prompt_tokens = np.ascontiguousarray(prompt_tokens, dtype=np.int64)
        self.output_tokens = np.ascontiguousarray(output_tokens, dtype=np.int64)
        self.ids = np.arange(n, dtype=np.int64)
        self.priority = np.zeros(n, dtype=np.int64) if priority is None else np.asarray(priority, dtype=np.int64)
        self.session_id = session_id
        self.prefix_blocks = prefix_blocks
        self.model = model
        for name in ("prompt_tokens", "output_tokens", "priority", "session_id", "prefix_blocks", "model"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} entries for {n} requests")

    def __len__(self) -> int:
        return len(self.arrival_s)

    def _one(self, i: int) -> Request:
        return Request(i, float(self.arrival_s[i]), int(self.prompt_tokens[i]), int(self.output_tokens[i]),
                       self.session_id[i] if self.session_id is not None else None,
                       tuple(self.prefix_blocks[i]) if self.prefix_blocks is not None else (),
                       self.model[i] if self.model is not None else None, int(self.priority[i]))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._one(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self._one(i % n)

    def __iter__(self) -> Iterator[Request]:
        return (self._one(i) for i in range(len(self)))

    def __eq__(self, other) -> bool:
        if isinstance(other, RequestTable):
            return (len(self) == len(other) and all(np.array_equal(getattr(self, c), getattr(other, c))
                                                    for c in ("arrival_s", "prompt_tokens", "output_tokens", "priority"))
                    and all(getattr(self, c) == getattr(other, c) for c in ("session_id", "prefix_blocks", "model")))
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RequestTable({len(self)} requests)"
