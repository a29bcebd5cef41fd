"""The HTTP service: the app factory, routes, auth, metrics and the wire protocol (pydantic)."""
