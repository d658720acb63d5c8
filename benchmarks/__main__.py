"""``python -m benchmarks [--quick] [--only NAME,...]``: run every benchmark."""

from .run_all import main

main()
