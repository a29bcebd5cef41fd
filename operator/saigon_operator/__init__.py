"""Saigon operator."""
