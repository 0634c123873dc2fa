"""Adapters from real open-data sources to the platform's events."""
