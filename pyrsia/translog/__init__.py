"""The transparency log: signed transactions in hash-chained blocks, one file each.

Pure cores: `codec` (canonical msgpack), `tx` (transactions, endorsements, limits),
`merkle` (RFC 6962), `block` (the block format), `chain` (which block may come next,
and the state it leaves), `checkpoint` (C2SP signed notes), `chunks` (chunk hashes
and roots of blobs). Disk shells: `store` (block files, FORMAT), `index` (SQLite).
`ledger` is the one object the node talks to: one writer thread, lock-free readers.
"""
