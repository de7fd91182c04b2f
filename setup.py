"""Packaging detail pyproject.toml cannot express: the shipped data (hardware/, workloads/, traces/ at the
repository root, the layout DESIGN.md describes) installed inside the package as ``simllm._data``, read
through importlib.resources by :func:`simllm.config.data_roots`."""

from setuptools import find_packages, setup

DATA = ["hardware/**/*.yaml", "workloads/**/*.yaml", "workloads/**/*.yml", "traces/*.csv", "traces/*.jsonl",
        "traces/*.md"]

setup(
    packages=find_packages(include=["simllm", "simllm.*"]) + ["simllm._data"],
    package_dir={"simllm._data": "."},
    package_data={"simllm._data": DATA},
    include_package_data=False,
)
