"""Picklable fake point runners for sweep-engine tests (no simulation)."""

import time


def quadratic(cfg: dict) -> dict:
    x = cfg["x"]
    if x == 3:
        raise ValueError("x=3 is forbidden")
    return {"y": x * x, "seed": cfg.get("seed", 0)}


def slow(cfg: dict) -> dict:
    time.sleep(cfg.get("sleep", 0.05))
    return {"y": cfg["x"] * 2}


def capacity(cfg: dict) -> dict:
    # attainment falls linearly past rate 7.3: the bisection must find ~7.3
    rate = cfg["workload"]["rate"]
    return {"slo_attainment": 1.0 if rate <= 7.3 else 0.5, "saturated": False}
