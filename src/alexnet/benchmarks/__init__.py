"""Speed measured side by side against a baseline run (src/benchmark.py, src/benchmark_data.py,
src/device_check.py)."""
