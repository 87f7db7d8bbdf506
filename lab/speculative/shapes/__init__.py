"""Tree shapes for speculative decoding: which tree to draft under a node budget (Sequoia's dynamic program)."""
