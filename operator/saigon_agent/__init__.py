"""Saigon agent sidecar: syncs adapters onto one pod."""
