"""The benchmark driver's own modules (never imported by a peer's venv)."""
