"""Adapters: on-disk layout, validated loading, the tiered cache and the cascade."""
