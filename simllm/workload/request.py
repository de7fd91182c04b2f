"""The unit of work the simulator serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


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
