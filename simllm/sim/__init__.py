"""simllm.sim"""
