"""Build from source: rebuild a Maven release from its git tag in a sandbox.

Not to be confused with `node/builds.py`, where "build" means publishing through the
authorities. Here a *source build* is a spec (`spec.py`, pure: Reproducible Central's
`.buildspec` or pyrsia's TOML form), a sandbox plan (`plan.py`, pure: the bubblewrap
argv, environment and limits), the shell that clones and runs it (`sandbox.py`), the
checks on the cloned tree (`tree.py`, pure), the project's modules and their
coordinates (`modules.py`, pure: which jars and poms a build publishes), Maven's
`.buildinfo` (`buildinfo.py`, pure), and the comparison of two builds' outputs
(`compare.py`, pure: which files and which jar entries differ, like Reproducible
Central's `.buildcompare`).
"""
