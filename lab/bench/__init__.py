"""Benchmarks: scripts that measure, print a short table last, and write JSON under results/."""
