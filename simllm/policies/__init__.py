"""Pluggable policies, each kind a registry of small classes behind one Protocol."""

from .batching import Batch, BatchingPolicy, batching, make_batching
from .registry import Registry
from .routing import RoutingPolicy, make_router, routing

__all__ = ["Batch", "BatchingPolicy", "Registry", "RoutingPolicy", "batching", "make_batching", "make_router",
           "routing"]
