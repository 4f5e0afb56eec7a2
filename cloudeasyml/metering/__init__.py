"""Pricing and the usage meter."""
