"""The log line format shared by the CLI and the worker's prefork children.

Library code only logs; handlers are configured by the CLI (:func:`celeriac.cli.main.setup_logging`)
and, in a prefork child, by the child itself with the level and this format the parent passes, so a
child's lines read like its parent's.
"""

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
