"""Small helpers shared by several modules."""
