"""CloudEasyML's benchmark: ``python -m bench`` from the repository root (see README.md)."""
