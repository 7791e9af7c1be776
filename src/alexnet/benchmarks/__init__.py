"""Speed measured side by side against a baseline run (src/benchmark.py, src/device_check.py)."""
