"""The parts of ``bench/soak.py``: the worker's app, the sampler, the flatness verdict, the chart.

``bench/soak.py`` puts ``bench/`` on ``sys.path``, so these import as ``soak_parts.<module>``; the
worker finds its app as ``-A soak_parts.app`` the same way (``PYTHONPATH``).
"""
