"""Herald's Python SDK."""
