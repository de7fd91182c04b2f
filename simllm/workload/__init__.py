"""Workloads: request streams from real traces and synthetic generators."""

from .request import Request

__all__ = ["Request"]
