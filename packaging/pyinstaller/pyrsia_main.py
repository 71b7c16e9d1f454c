"""Entry point frozen into the single `pyrsia` executable."""

from pyrsia.cli.app import main

main()
