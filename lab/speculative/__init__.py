"""Speculative decoding: token trees, their verification, drafters and tree shapes."""
