"""Benchmarks that compare the project with its peers."""
