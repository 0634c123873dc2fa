"""The FastAPI service over the live twin. It never owns truth: its read model is built from ``twin.updates``."""
