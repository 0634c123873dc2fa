"""GTFS static + GTFS-Realtime buses: ``plietsch source gtfs`` (README section GTFS)."""
