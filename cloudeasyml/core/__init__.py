"""The bottom layer: value types every other package shares, importing nothing else of the platform.

Tensor specs, serving config, pricing and the cost scale, the caller's principal, the clock and the file
digest live here so that ``plugins``, ``runtime``, ``metering`` and ``db`` can all use them without importing
each other (the layer order is in pyproject.toml's ``[tool.importlinter]``). Plugin authors import them from
``cloudeasyml`` itself.
"""
