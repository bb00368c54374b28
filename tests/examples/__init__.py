"""The examples, tested as their users run them (a package, so its conftest is its own)."""
