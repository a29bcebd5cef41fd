"""End-to-end harness for the operator: real API server, operator, agents and runtimes on 127.0.0.1."""
