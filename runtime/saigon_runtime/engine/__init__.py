"""The multi-LoRA engine: batched generation where every row may use its own adapter."""
