"""Persistence: tables, column types, engines."""
