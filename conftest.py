# Fixtures shared by every test directory (runtime/tests, operator/tests, tests).
pytest_plugins = ["controlplane.pytest_plugin"]
