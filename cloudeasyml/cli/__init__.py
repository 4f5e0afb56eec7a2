"""The ``cloudeasyml`` command line."""
