"""The pytest plugin, tested through a user's runs (a package, so its conftest is its own)."""
