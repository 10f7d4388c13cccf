// Many loopback addresses for benchmarks that need many distinct endpoints on one machine:
// Linux routes all of 127.0.0.0/8 to `lo`, so a server can listen on one port at each of
// 127.1.x.y and every address:port is a separate endpoint (its own label, pool, connections).

/** Addresses per /24 used: 1..254 (no .0 or .255, which some tools treat as special). */
const PER_BLOCK = 254

/** The `i`-th (from 0) address of the 127.1.0.0/16 block: 127.1.0.1, ..., 127.1.0.254, 127.1.1.1, ... */
export function loopbackAddress (i: number): string {
  if (!Number.isInteger(i) || i < 0 || i >= PER_BLOCK * 256) throw new Error(`loopback address index out of range: ${i}`)
  return `127.1.${Math.floor(i / PER_BLOCK)}.${(i % PER_BLOCK) + 1}`
}
