"""Avro schemas (one ``.avsc`` per event type), the codec and compatibility checks. Imports fastavro only."""
