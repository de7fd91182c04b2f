"""simllm: a discrete-event simulator for LLM and Mixture-of-Experts serving.

Layers (dependencies point down): hardware/model descriptors -> cost (roofline,
collectives) -> sim (SimPy cluster) -> metrics -> report; placement and sweep on the side.
"""

__version__ = "0.1.0"
