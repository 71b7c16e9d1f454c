// A js-libp2p node driven by pyrsia's interop tests: one JSON command per stdin line,
// one JSON answer per stdout line ({"id", "ok", ...} or {"id", "ok": false, "error"}).
// Startup prints {"op":"ready","peerId","addrs"}. It serves /interop/js-echo/1.0.0
// (echo until the remote closes) besides identify and ping, and runs kad-dht on pyrsia's
// protocol id as a DHT server that keeps loopback addresses (see toolchain notes).
// Flags: --relay-server runs circuit relay v2's hop service (circuitRelayServer, its default
// limits: 2 min and 128 KiB each way per circuit); --relay-client adds circuitRelayTransport,
// so the node dials `/p2p-circuit` addresses and can `listen` on `/p2p/<relay>/p2p-circuit`
// (a reservation on that relay). --autonat runs @libp2p/autonat (AutoNAT v1, client and
// server), --autonat-v2 runs @libp2p/autonat-v2 (client and server), --dcutr runs
// @libp2p/dcutr (it dials only public addresses, and offers only verified ones); --listen=IP listens
// on IP instead of 127.0.0.1 (in a network namespace, an address AutoNAT counts as public).

// js-libp2p 3.x calls Promise.withResolvers, which Node 20 lacks.
Promise.withResolvers ??= function () {
  let resolve, reject
  const promise = new this((a, b) => { resolve = a; reject = b })
  return { promise, resolve, reject }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { multiaddr } = await import('@multiformats/multiaddr')
const { peerIdFromString } = await import('@libp2p/peer-id')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { CID } = await import('multiformats/cid')
const Digest = await import('multiformats/hashes/digest')
const readline = await import('node:readline')
const { circuitRelayServer, circuitRelayTransport } = await import('@libp2p/circuit-relay-v2')
const { RecordEnvelope } = await import('@libp2p/peer-record')
const { generateKeyPair } = await import('@libp2p/crypto/keys')
const { peerIdFromPrivateKey, peerIdFromPublicKey, peerIdFromMultihash } = await import('@libp2p/peer-id')
// The voucher record and its protobuf are not in the package's exports: load them by path.
const { ReservationVoucherRecord } = await import('./node_modules/@libp2p/circuit-relay-v2/dist/src/server/reservation-voucher.js')
const { ReservationVoucher } = await import('./node_modules/@libp2p/circuit-relay-v2/dist/src/pb/index.js')
const VOUCHER_DOMAIN = 'libp2p-relay-rsvp'

const { autoNAT } = await import('@libp2p/autonat')
const { autoNATv2 } = await import('@libp2p/autonat-v2')
const { dcutr } = await import('@libp2p/dcutr')
const { Message: AutonatV1Message } = await import('./node_modules/@libp2p/autonat/dist/src/pb/index.js')
const { pbStream } = await import('@libp2p/utils')

const flags = new Set(process.argv.slice(2))
const relayServer = flags.has('--relay-server')
const relayClient = flags.has('--relay-client')
const listenIp = process.argv.slice(2).find(f => f.startsWith('--listen='))?.slice('--listen='.length) ?? '127.0.0.1'
const AUTONAT_V1 = '/libp2p/autonat/1.0.0'

const JS_ECHO = '/interop/js-echo/1.0.0'

const node = await createLibp2p({
  addresses: { listen: [`/ip4/${listenIp}/tcp/0`] },
  transports: relayClient ? [tcp(), circuitRelayTransport()] : [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    // js-libp2p's connection monitor pings too: room for its stream beside the tests' own.
    ping: ping({ maxOutboundStreams: 4, maxInboundStreams: 4 }),
    dht: kadDHT({ protocol: '/pyrsia/kad/1.0.0', clientMode: false, peerInfoMapper: passthroughMapper }),
    ...(relayServer ? { relay: circuitRelayServer() } : {}),
    ...(flags.has('--autonat') ? { autonat: autoNAT() } : {}),
    ...(flags.has('--autonat-v2') ? { autonatV2: autoNATv2() } : {}),
    ...(flags.has('--dcutr') ? { dcutr: dcutr() } : {})
  }
})

await node.handle(JS_ECHO, async (stream) => {
  for await (const chunk of stream) {
    if (!stream.send(chunk.subarray())) await stream.onDrain()
  }
  await stream.close()
}, { runOnLimitedConnection: true })

const out = (message) => process.stdout.write(JSON.stringify(message) + '\n')
const hex = (bytes) => Buffer.from(bytes).toString('hex')
// A blob's CID: v1, raw codec 0x55, sha2-256 multihash (0x12) of its digest.
const cidOf = (digest) => CID.create(1, 0x55, Digest.create(0x12, Buffer.from(digest, 'hex')))
const peerInfo = (info) => ({ peer: info.id.toString(), addrs: info.multiaddrs.map(a => a.toString()) })

async function identified (peer) {
  // identify runs right after connecting; wait until the peer store has its answer.
  const peerId = peerIdFromString(peer)
  for (let i = 0; i < 200; i++) {
    try {
      const info = await node.peerStore.get(peerId)
      const agent = info.metadata.get('AgentVersion')
      if (agent != null && info.protocols.length > 0) {
        return {
          agent: new TextDecoder().decode(agent),
          protocols: info.protocols,
          addrs: info.addresses.map(a => a.multiaddr.toString())
        }
      }
    } catch {}
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`no identify result for ${peer}`)
}

const ops = {
  async dial ({ addr }) {
    const connection = await node.dial(multiaddr(addr))
    return { peer: connection.remotePeer.toString(), muxer: connection.multiplexer, encryption: connection.encryption }
  },
  async ping ({ peer }) {
    return { rtt_ms: await node.services.ping.ping(peerIdFromString(peer)) }
  },
  async identify ({ peer }) {
    return await identified(peer)
  },
  async connections () {
    return {
      connections: node.getConnections().map(c => ({
        peer: c.remotePeer.toString(),
        direction: c.direction,
        muxer: c.multiplexer,
        addr: c.remoteAddr.toString(),
        relayed: !c.direct,
        limited: c.limits != null
      }))
    }
  },
  async echo ({ peer, protocol, data }) {
    const stream = await node.dialProtocol(peerIdFromString(peer), protocol, { runOnLimitedConnection: true })
    stream.send(Buffer.from(data, 'hex'))
    await stream.close()
    const chunks = []
    for await (const chunk of stream) chunks.push(Buffer.from(chunk.subarray()))
    return { data: hex(Buffer.concat(chunks)) }
  },
  async listen ({ addr }) {
    // A reservation on the relay in `addr` (/p2p/<relay>/p2p-circuit, or with the relay's
    // transport address before it); answers with the node's addresses once one is relayed.
    await node.components.transportManager.listen([multiaddr(addr)])
    for (let i = 0; i < 200; i++) {
      const addrs = node.getMultiaddrs().map(a => a.toString())
      if (addrs.some(a => a.includes('/p2p-circuit'))) return { addrs }
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    throw new Error(`no relayed address after listening on ${addr}`)
  },
  async addrs () {
    return { addrs: node.getMultiaddrs().map(a => a.toString()) }
  },
  async reservations () {
    // The relay server's current reservations (--relay-server only).
    return { peers: [...node.services.relay.reservations.keys()].map(p => p.toString()) }
  },
  async sealVoucher ({ peer, expiration }) {
    // A reservation voucher as js-libp2p's relay seals it, by a fresh relay key.
    const key = await generateKeyPair('Ed25519')
    const relay = peerIdFromPrivateKey(key)
    const record = new ReservationVoucherRecord({ relay, peer: peerIdFromString(peer), expiration })
    const envelope = await RecordEnvelope.seal(record, key)
    return { relay: relay.toString(), envelope: hex(envelope.marshal()) }
  },
  async openVoucher ({ envelope }) {
    // js-libp2p's check of a voucher: the envelope's signature for the relay domain, then the record.
    const opened = await RecordEnvelope.openAndCertify(Buffer.from(envelope, 'hex'), VOUCHER_DOMAIN)
    const voucher = ReservationVoucher.decode(opened.payload)
    const idOf = (bytes) => peerIdFromMultihash(Digest.decode(bytes)).toString()
    return {
      signer: peerIdFromPublicKey(opened.publicKey).toString(),
      payloadType: hex(opened.payloadType),
      relay: idOf(voucher.relay),
      peer: idOf(voucher.peer),
      expiration: Number(voucher.expiration)
    }
  },
  async autonat () {
    // What AutoNAT made of our addresses: the address manager's verdicts, and each
    // service's tally of answers for addresses still under test (js deletes an entry once
    // it decides, so a confirmed address shows only as verified).
    const tally = (service) => service == null
      ? null
      : [...service.dialResults.values()].map(r => ({ addr: r.multiaddr.toString(), success: r.success, failure: r.failure }))
    return {
      addrs: node.components.addressManager.getAddressesWithMetadata()
        .map(a => ({ addr: a.multiaddr.toString(), verified: a.verified, type: a.type })),
      v1: tally(node.services.autonat),
      v2: tally(node.services.autonatV2?.client)
    }
  },
  async autonatV1Dial ({ peer, addrs }) {
    // One AutoNAT v1 request by hand, in js-libp2p's own message codec: DIAL with our peer
    // id and `addrs`, and the server's DIAL_RESPONSE as it came.
    const stream = await node.dialProtocol(peerIdFromString(peer), AUTONAT_V1)
    const signal = AbortSignal.timeout(40000)
    const messages = pbStream(stream).pb(AutonatV1Message)
    await messages.write({
      type: AutonatV1Message.MessageType.DIAL,
      dial: { peer: { id: node.peerId.toMultihash().bytes, addrs: addrs.map(a => multiaddr(a).bytes) } }
    }, { signal })
    const response = await messages.read({ signal })
    await stream.close()
    const answer = response.dialResponse
    return {
      type: response.type,
      status: answer?.status,
      statusText: answer?.statusText ?? '',
      addr: answer?.addr == null ? null : multiaddr(answer.addr).toString()
    }
  },
  async routingTable () {
    return { size: node.services.dht.routingTable.size }
  },
  async provide ({ digest }) {
    const cid = cidOf(digest)
    await node.contentRouting.provide(cid, { signal: AbortSignal.timeout(20000) })
    return { cid: cid.toString() }
  },
  async findProviders ({ digest, want }) {
    // Every provider the query yields, or those up to the peer `want` when given.
    const cid = cidOf(digest)
    const providers = []
    for await (const info of node.contentRouting.findProviders(cid, { signal: AbortSignal.timeout(20000) })) {
      providers.push(peerInfo(info))
      if (info.id.toString() === want) break
    }
    return { cid: cid.toString(), providers }
  },
  async findPeer ({ peer }) {
    // useCache: false, so the answer comes from a DHT query, not the local peer store.
    const info = await node.peerRouting.findPeer(peerIdFromString(peer), {
      useCache: false, signal: AbortSignal.timeout(20000)
    })
    return peerInfo(info)
  },
  async stop () {
    await node.stop()
    setTimeout(() => process.exit(0), 10)
    return {}
  }
}

out({ op: 'ready', peerId: node.peerId.toString(), addrs: node.getMultiaddrs().map(a => a.toString()) })

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', async (line) => {
  let command
  try {
    command = JSON.parse(line)
    const result = await ops[command.op](command)
    out({ id: command.id, ok: true, ...result })
  } catch (err) {
    out({ id: command?.id, ok: false, error: String(err?.stack ?? err) })
  }
})
lines.on('close', async () => { await node.stop(); process.exit(0) })
