"""python -m benchmarks.claims NAME: see the package docstring."""

from . import main

main()
