"""Drafters: one file each, each registering the speculative method it drives."""
