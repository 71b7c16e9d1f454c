"""pyrsia: a decentralized package network.

Every node speaks the Docker Registry v2 pull API and the Maven repository layout to
the tools people already use; see docs/architecture.md for the layers.
"""

from __future__ import annotations

__version__ = "0.1.0"
