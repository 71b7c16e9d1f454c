"""Suite-wide settings: every daemon a test starts picks free p2p ports.

Tests run many nodes side by side (and beside a developer's own node on 44000); a
node started by a test without `--p2p-port` takes a free port instead of the default.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYRSIA_P2P_PORT", "0")
