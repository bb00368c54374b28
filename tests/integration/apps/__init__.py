"""Task modules that real worker processes load with ``-A apps.<module>`` in integration tests."""
