"""The pipeline behind ``spatialfuse run`` and ``spatialfuse demo``: config, steps, cache, report."""
