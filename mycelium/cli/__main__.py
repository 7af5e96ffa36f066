"""``python -m mycelium.cli``: the same commands as ``mycelium_net.py``."""

from mycelium.cli import main

main()
