"""Batch inference: input files, jobs over them in chunks, and the workers that run the chunks (README, "Batch
inference").
"""
