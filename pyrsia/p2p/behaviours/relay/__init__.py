"""Circuit relay v2 (libp2p/specs relay/circuit-v2.md): a node behind NAT reserves a slot
on a public node and is reached through it.

`messages` is the hop/stop codec, `voucher` the signed reservation voucher, `hop` the
relay's side (reservations, CONNECT, splicing two streams under limits) and `client`
the reserving and connecting side. All pure: time is `now_s`, wall-clock time is
`now_s + unix_offset_s`, and the swarm executes the effects.
"""
