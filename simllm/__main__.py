"""``python -m simllm``: the command line."""

from .cli import main

main()
