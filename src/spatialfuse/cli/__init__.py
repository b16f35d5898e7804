"""The ``spatialfuse`` command-line interface."""
