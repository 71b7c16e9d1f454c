"""The transparency log: signed transactions in hash-chained blocks, one file each.

Pure cores: `codec` (canonical msgpack), `tx`, `merkle` (RFC 6962), `block`,
`checkpoint` (C2SP signed notes). Disk shells: `store` (block files), `index`
(SQLite). `ledger` is the one object the node talks to.
"""
