"""The operator API key the benchmarks give every API they start (``PLIETSCH_OPERATOR_API_KEY``) and the header that
sends it: the routes keep their rules (issue 11), the benchmarks log in as an operator."""

BENCH_KEY = "pk_bench_" + "operator-key-for-benchmarks-only-not-for-production"
HEADERS = {"Authorization": f"Bearer {BENCH_KEY}"}
ENV = {"PLIETSCH_OPERATOR_API_KEY": BENCH_KEY}
