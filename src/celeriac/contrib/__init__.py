"""Integrations with other frameworks: Django, pytest."""
