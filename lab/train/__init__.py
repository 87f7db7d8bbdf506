"""Training recipes run on a GPU in jobs of under ten minutes that resume: `python -m lab train NAME ...`.

responses: the target's own answers to ShareGPT prompts (training text, SAM's corpus); fastdraft: a small draft
model distilled from the target ("FastDraft: How to Train Your Draft"); dllm: the default model as a block-diffusion
LM (dllm-default); learn2pd, tracelock: the small filters of the learned dLLM commitment policies (CPU, minutes;
lab/train/commitment.py).
"""
