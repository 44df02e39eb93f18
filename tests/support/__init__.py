"""Helpers shared by the test modules and bench/: real server processes, the small test model, faulty
clients, /proc readers, the container stack, schemathesis hooks. No test module imports another."""
