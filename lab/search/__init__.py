"""Autoregressive decoding and search: greedy, sampling, beam search."""
