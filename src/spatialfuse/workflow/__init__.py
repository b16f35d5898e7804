"""The pipeline behind ``spatialfuse run`` and ``spatialfuse demo``.

Config, steps, the step cache and the QC report.
"""
