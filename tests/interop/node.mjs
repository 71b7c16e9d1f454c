// A js-libp2p node driven by pyrsia's interop tests: one JSON command per stdin line,
// one JSON answer per stdout line ({"id", "ok", ...} or {"id", "ok": false, "error"}).
// Startup prints {"op":"ready","peerId","addrs"}. It serves /interop/js-echo/1.0.0
// (echo until the remote closes) besides identify and ping.

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
const readline = await import('node:readline')

const JS_ECHO = '/interop/js-echo/1.0.0'

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping() }
})

await node.handle(JS_ECHO, async (stream) => {
  for await (const chunk of stream) {
    if (!stream.send(chunk.subarray())) await stream.onDrain()
  }
  await stream.close()
})

const out = (message) => process.stdout.write(JSON.stringify(message) + '\n')
const hex = (bytes) => Buffer.from(bytes).toString('hex')

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
        peer: c.remotePeer.toString(), direction: c.direction, muxer: c.multiplexer, addr: c.remoteAddr.toString()
      }))
    }
  },
  async echo ({ peer, protocol, data }) {
    const stream = await node.dialProtocol(peerIdFromString(peer), protocol)
    stream.send(Buffer.from(data, 'hex'))
    await stream.close()
    const chunks = []
    for await (const chunk of stream) chunks.push(Buffer.from(chunk.subarray()))
    return { data: hex(Buffer.concat(chunks)) }
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
