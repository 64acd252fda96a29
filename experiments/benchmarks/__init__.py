"""Benchmarks and checks of the implementation (not needed to train): `python -m experiments.benchmarks.<name> --help`."""
