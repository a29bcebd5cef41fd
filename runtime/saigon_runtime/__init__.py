"""Saigon runtime: base model plus many LoRA adapters."""
