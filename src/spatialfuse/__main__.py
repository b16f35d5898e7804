"""``python -m spatialfuse``."""

from spatialfuse.cli.main import main

main()
