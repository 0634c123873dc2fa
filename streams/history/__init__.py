"""History: the archive as Parquet files (``store``, ``writer``), queries through DuckDB (``engine``) and time travel
from snapshots (``timetravel``)."""
