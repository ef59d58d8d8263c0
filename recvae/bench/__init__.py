"""Offline benchmarks: suites of data sets x models x settings, run and written up as reports."""
