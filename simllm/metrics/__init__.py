"""Per-request and per-step tables and the run summary (definitions as in ``vllm bench serve``)."""

from .summary import REQUEST_COLUMNS, requests_table, saturation, steps_table, summarize

__all__ = ["REQUEST_COLUMNS", "requests_table", "saturation", "steps_table", "summarize"]
