// A real Redis server (test/helpers/redis.ts) with the ioredis client that shared rate limits
// will use: counters with expiry as a rate limiter keeps them, then the server going away
// (commands fail fast, they do not hang) and coming back on the same port.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis } from '../helpers/redis.js'
import { eventually } from '../helpers/poll.js'
import { pidAlive } from '../helpers/tool-process.js'

test('redis-server on loopback: SET/GET, INCR with expiry, through ioredis', async (t) => {
  const redis = await startRedis(t)
  assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`)
  assert.ok(pidAlive(redis.pid), 'the server runs')

  const client = new Redis(redis.url, { maxRetriesPerRequest: 1, connectTimeout: 1_000, commandTimeout: 1_000 })
  t.after(() => { client.disconnect() })

  assert.equal(await client.set('greeting', 'hello', 'PX', 10_000), 'OK')
  assert.equal(await client.get('greeting'), 'hello')
  const ttl = await client.pttl('greeting')
  assert.ok(ttl > 0 && ttl <= 10_000, `PTTL ${ttl}`)

  // a fixed-window counter: the first hit of a window creates it with its expiry (SET NX PX,
  // which Redis 6.2 has too), every hit counts (INCR keeps the expiry)
  const key = 'rl:route-a:10.0.0.1'
  const hits: number[] = []
  for (let i = 0; i < 3; i++) {
    const replies = await client.multi().set(key, 0, 'PX', 150, 'NX').incr(key).exec()
    assert.ok(replies, 'the transaction ran')
    for (const [err] of replies) assert.equal(err, null)
    hits.push(replies[1]![1] as number)
  }
  assert.deepEqual(hits, [1, 2, 3])
  const windowTtl = await client.pttl(key)
  assert.ok(windowTtl > 0 && windowTtl <= 150, `the window's PTTL is ${windowTtl}, set once by its first hit`)
  // the window ends: the key expires and counting starts over
  await eventually(async () => await client.exists(key) === 0, 'the counter to expire', 2_000)
  assert.equal(await client.incr(key), 1)
})

test('redis-server stop: commands fail fast; restart on the same port: the client reconnects', async (t) => {
  const redis = await startRedis(t)
  const client = new Redis(redis.port, redis.host, {
    // what a rate limiter wants of its store: an answer or an error soon, never a queue
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 300,
    commandTimeout: 300,
    retryStrategy: () => 50, // keep reconnecting, every 50 ms
  })
  client.on('error', () => { /* reconnect attempts while the server is down */ })
  t.after(() => { client.disconnect() })
  await eventually(() => client.status === 'ready', 'the client to connect', 2_000)
  assert.equal(await client.set('k', 'before'), 'OK')

  const firstPid = redis.pid
  await redis.stop()
  assert.equal(pidAlive(firstPid), false, 'stop() ended the server process')
  await redis.stop() // idempotent

  // ioredis's defaults would queue the command until Redis is back
  const started = Date.now()
  const failure = await client.get('k').then(() => null, (err: unknown) => err)
  const failedIn = Date.now() - started
  assert.ok(failure instanceof Error, 'a command with Redis down fails')
  assert.ok(failedIn < 1_000, `a command with Redis down failed in ${failedIn} ms (${failure.message})`)
  t.diagnostic(`with Redis down, GET failed in ${failedIn} ms: ${failure.message}`)

  await redis.restart()
  assert.notEqual(redis.pid, firstPid, 'a new process')
  assert.ok(pidAlive(redis.pid))
  assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`, 'the same address')
  // the client comes back by itself; the new server starts empty (no persistence)
  await eventually(async () => client.status === 'ready' && await client.ping() === 'PONG', 'the client to reconnect', 3_000)
  assert.equal(await client.get('k'), null)
  assert.equal(await client.incr('k2'), 1)
})
