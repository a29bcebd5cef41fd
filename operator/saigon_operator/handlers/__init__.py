"""Reconciliation logic behind the kopf decorators in saigon_operator.main."""
