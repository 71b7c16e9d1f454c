"""The daemon: the node's home directory, wiring of services, lifecycle."""
