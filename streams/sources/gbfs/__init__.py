"""GBFS 3.0 bike sharing: a long-running source (``plietsch source gbfs``; docs/gbfs.md)."""
