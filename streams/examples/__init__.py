"""Example stream processors for authors to copy (see streams/processors.py)."""
