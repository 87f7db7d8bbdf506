"""Panel apps: the arena (run and compare methods on one prompt, live)."""
