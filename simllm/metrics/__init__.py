"""simllm.metrics"""
