"""Runnable experiment modules (thin mains over ml_collections configs)."""
