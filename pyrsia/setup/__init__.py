"""Client configuration for pointing containerd, Docker, podman and Maven at a node.

Pure text transformations only: each module takes a tool's config file as text (None
when the file is absent) and returns the text it should hold, or raises `ConfigError`
naming what is wrong with the input. Applying them twice changes nothing the second
time. Reading, writing, backups and undo belong to the shell (`pyrsia.cli.setup`).
"""
