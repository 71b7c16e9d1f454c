"""Artifacts: content-addressed blobs on disk and the service that finds and verifies them."""
