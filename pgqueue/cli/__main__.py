"""``python -m pgqueue.cli``, the same as the ``pgqueue`` command."""

from . import main

main()
