"""Scripts of the paper tables, sweeps and the backbone evaluation harness (python -m scripts.evaluate)."""
