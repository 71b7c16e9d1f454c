"""Deterministic simulation: many pure cores, a fake clock and a fake network, one seed.

Every run is a function of one integer seed (TigerBeetle's VOPR): the network's
delays, losses, duplicates and reorderings, and the scenario's own choices, all come
from `random.Random(seed)`. A failing run prints `seed=N`; `PYRSIA_SIM_SEED=N` replays
exactly that run, and `PYRSIA_SIM_SEEDS=M` runs M seeds where the suite runs fewer.

    clock.py    SimClock: time only moves when the driver says so
    network.py  Faults (plain data) and SimNetwork: delay, loss, duplication,
                reordering, partitions that heal, nodes that crash and restart
    driver.py   Simulation: an event queue that delivers messages to cores and ticks
                them at their deadlines; seeds() and replayable() for tests
    kad.py      KadNode: the Kademlia core behind the driver's node interface
    nat.py      SimHost and Internet: the AutoNAT, relay and DCUtR cores behind a
                simulated host, over NATs that map ports or not and drop what they
                were not asked for
"""
