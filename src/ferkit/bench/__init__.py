"""Benchmarks: commands that measure speed and print tables with ratios against a baseline from the same run."""
