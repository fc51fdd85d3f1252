"""Benchmarks run by `make bench`: the nightly drift step against bare scipy and full-data Evidently."""
