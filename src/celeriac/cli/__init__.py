"""The ``celeriac`` command line: a thin click layer, one module per command."""
