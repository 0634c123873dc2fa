"""The worker's Prometheus metrics (served on ``/metrics`` of the worker's web port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECORDS = Counter("plietsch_worker_records", "Kafka records processed, per agent", ["agent"])
READINGS = Counter("plietsch_worker_datums", "datums (readings, events) processed, per agent", ["agent"])
SKIPPED = Counter("plietsch_worker_records_skipped", "records skipped because their effects are already applied "
                  "(applied-offset markers: redelivery or replay)", ["agent"])
STATE_CHANGES = Counter("plietsch_worker_state_changes", "entity states changed, per agent", ["agent"])
DEAD = Counter("plietsch_worker_dead_letters", "dead letters written, per agent and reason class", ["agent", "reason"])
TX_COMMITS = Counter("plietsch_worker_transactions_committed", "transactions committed, per agent", ["agent"])
TX_ABORTS = Counter("plietsch_worker_transactions_aborted", "transactions aborted, per agent", ["agent"])
TX_RETRIES = Counter("plietsch_worker_transaction_retries", "transaction attempts retried after a transient error",
                     ["agent"])
RATE = Gauge("plietsch_worker_datums_per_second", "datums processed per second over the last interval, per agent",
             ["agent"])
LAG = Gauge("plietsch_worker_consumer_lag", "records behind the high watermark, per input partition",
            ["topic", "partition"])
