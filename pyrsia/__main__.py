"""`python -m pyrsia` runs the same CLI as the `pyrsia` executable."""

from __future__ import annotations

from pyrsia.cli.app import main

if __name__ == "__main__":
    main()
