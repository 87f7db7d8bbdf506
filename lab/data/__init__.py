"""Data shipped with the lab: real prompts for tests, notebooks and the arena."""
