"""``python -m pgqueue``, the same as the ``pgqueue`` command."""

from .cli import main

main()
