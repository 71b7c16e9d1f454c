"""Peer-to-peer layer: identities now; wire, sessions, DHT and exchange as they land."""
