"""Registry front ends: Docker Registry v2 pull API and the node's own API."""
