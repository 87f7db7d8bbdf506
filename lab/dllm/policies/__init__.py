"""dLLM commitment policies, one file each (registered with the family "diffusion")."""
