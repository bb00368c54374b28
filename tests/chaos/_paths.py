"""Makes the chaos modules and the integration harness importable (tests/chaos has no package).

Every test module of tests/chaos imports this first: the workers find ``chaos_app`` through
``PYTHONPATH``, the test process through ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "integration"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
