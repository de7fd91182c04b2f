"""Roofline cost model: operators and collectives to seconds. Pure functions, no simulation time."""
