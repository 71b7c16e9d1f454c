"""BFT consensus among authorized nodes: pure cores, driven by the node and the simulator.

quorum.py    vote counting per (height, round, type), quorum and f+1 thresholds
messages.py  proposals, prevotes, precommits, decisions: signing and wire form
core.py      Tendermint rounds as a tick/step/ready/advance state machine
"""
