"""Pure formats every layer may use: digests, image references, manifests, Maven paths, peer ids.

The bottom layer of the package graph (above only `errors`): modules here import
nothing of pyrsia but each other and the error tree, and do no I/O.
"""
