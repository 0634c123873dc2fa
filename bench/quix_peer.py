"""The Quix Streams peer of bench/pipeline.py: latest value per sensor in Quix's state (RocksDB with its changelog),
JSON readings. Runs inside the benchmark's own virtualenv (.bench-venv, quixstreams==3.28.1): it imports nothing of the
project. Prints one JSON line: readings processed and the seconds from the first to the last."""

from __future__ import annotations

import json
import sys
import time
import uuid

from quixstreams import Application


def main() -> None:
    bootstrap, topic_name, n, state_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    app = Application(broker_address=bootstrap, consumer_group=f"quix-bench-{uuid.uuid4().hex[:6]}",
                      auto_offset_reset="earliest", state_dir=state_dir, loglevel="WARNING")
    topic = app.topic(topic_name, value_deserializer="json", key_deserializer="str")
    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def latest(value: dict, state: object) -> None:
        state.set("latest", value)  # type: ignore[attr-defined]
        now = time.perf_counter()
        if not seen["n"]:
            seen["first"] = now
        seen["n"] += 1
        seen["last"] = now
        if seen["n"] >= n:
            app.stop()

    app.dataframe(topic).update(latest, stateful=True)
    app.run()
    print(json.dumps({"readings": seen["n"], "seconds": seen["last"] - seen["first"]}), flush=True)


if __name__ == "__main__":
    main()
