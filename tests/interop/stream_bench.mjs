// One Noise+yamux stream's throughput with js-libp2p, for benchmarks/p2p_stream.py.
//
//   node stream_bench.mjs --size-mib 256                 js -> js: two nodes in this process
//   node stream_bench.mjs --size-mib 256 --dial ADDR     js -> the peer at ADDR (/ip4/…/p2p/…)
//
// The sender opens /bench/count/1.0.0, writes SIZE bytes in 1 MiB buffers and closes
// its side; the receiver (the js node here, or pyrsia's benchmark handler) counts the
// bytes and answers with their number as 8 big-endian bytes. The time runs from opening
// the stream to that answer. Prints one JSON line: {"mib_s", "seconds", "bytes"}.

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
const { multiaddr } = await import('@multiformats/multiaddr')
const { randomBytes } = await import('node:crypto')

const PROTOCOL = '/bench/count/1.0.0'
const MIB = 1 << 20

const args = process.argv.slice(2)
const option = (name, fallback) => {
  const at = args.indexOf(name)
  return at >= 0 ? args[at + 1] : fallback
}
const size = Number(option('--size-mib', '256')) * MIB
const dial = option('--dial', null)

const makeNode = () => createLibp2p({
  addresses: { listen: dial ? [] : ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionMonitor: { enabled: false }
})

const sender = await makeNode()
let receiver = null
let target = dial ? multiaddr(dial) : null
if (!dial) {
  receiver = await makeNode()
  await receiver.handle(PROTOCOL, async (stream) => {
    let got = 0
    for await (const chunk of stream) got += chunk.byteLength
    const answer = Buffer.alloc(8)
    answer.writeBigUInt64BE(BigInt(got))
    stream.send(answer)
    await stream.close()
  })
  target = receiver.getMultiaddrs()[0]
}

await sender.dial(target)
const block = randomBytes(MIB)
const started = process.hrtime.bigint()
const stream = await sender.dialProtocol(target, PROTOCOL)
for (let sent = 0; sent < size; sent += MIB) {
  if (!stream.send(block)) await stream.onDrain()
}
await stream.close()
const parts = []
for await (const chunk of stream) parts.push(Buffer.from(chunk.subarray()))
const seconds = Number(process.hrtime.bigint() - started) / 1e9
const got = Buffer.concat(parts).readBigUInt64BE(0)
if (got !== BigInt(size)) {
  process.stderr.write(`the receiver counted ${got} of ${size} bytes\n`)
  process.exit(1)
}
process.stdout.write(JSON.stringify({ mib_s: size / MIB / seconds, seconds, bytes: size }) + '\n')
await sender.stop()
if (receiver) await receiver.stop()
process.exit(0)
