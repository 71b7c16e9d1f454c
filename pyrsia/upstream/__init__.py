"""Clients for the central registries a node verifies against and pulls through from."""
