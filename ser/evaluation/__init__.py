"""Metrics, reports and the evaluation entry point."""
