"""Workflows: signatures now; chain, group and chord build on them."""
