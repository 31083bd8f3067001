"""Offline evaluation: search and recommendation metrics per system, baselines, the
distillation trade-off, time drift and incremental updates, and the report that shows them.
"""
