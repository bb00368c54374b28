"""Parts of ``bench/capacity.py``: the app its workers run and its producers' loop."""
