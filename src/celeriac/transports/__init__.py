"""Transports: the brokers a message travels through. See :mod:`celeriac.transports.base`."""
