"""simllm.policies"""
