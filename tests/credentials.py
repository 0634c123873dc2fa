"""The operator API key the tests give every API they start (PLIETSCH_OPERATOR_API_KEY, set in tests/conftest.py for
this process and its children), and the header that sends it. Routes keep their rules; the tests log in."""

OPERATOR_KEY = "pk_test_" + "operator-key-for-the-test-suite-only-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
