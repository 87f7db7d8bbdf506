"""Triton kernels for the lab's hot paths, each beside its torch reference (installed as lab.kernels).

Never installed as a top-level `kernels`: transformers probes for a package of that name (Hugging Face's
kernel hub) and would take this one for it. No kernel has landed yet; the torch references in lab/ are
what runs everywhere.
"""
