// node-postgres acceptance matrix, run through pgdurable by tests/acceptance/test_node_pg.py.
//
// Usage: node matrix.js PORT USER PASSWORD [USER PASSWORD ...]
//
// The first USER/PASSWORD pair is the main login used by every case; every pair is also
// checked by the "auth" case. Output is one "key=value" per line on stdout. Each case prints
// "<case>.ok=true" when all its checks passed, or "<case>.error=<message>" (stack on stderr).
// The last line is "done=<failed case count>"; the exit status is 1 if any case failed.
'use strict'

const assert = require('node:assert/strict')
const pg = require('pg')

const args = process.argv.slice(2)
if (args.length < 3 || args.length % 2 !== 1) {
  console.error('usage: node matrix.js PORT USER PASSWORD [USER PASSWORD ...]')
  process.exit(2)
}
const port = Number(args[0])
const logins = []
for (let i = 1; i < args.length; i += 2) logins.push([args[i], args[i + 1]])
const [user, password] = logins[0]
const failed = []
// 'error' events a client emits outside any query (e.g. a message after Terminate). Without a
// listener node would crash the process; they are counted and reported instead.
const errorEvents = []

function track(emitter, what) {
  emitter.on('error', (err) => {
    errorEvents.push(`${what}: ${err.code || ''} ${err.message}`)
  })
  return emitter
}

// A hang anywhere must end the run with a message, not stall the test.
const watchdog = setTimeout(() => {
  out('watchdog', 'matrix did not finish within 60 s')
  process.exit(3)
}, 60_000)
watchdog.unref()

function out(key, value) {
  const text = String(value).replace(/\r/g, '\\r').replace(/\n/g, '\\n')
  process.stdout.write(`${key}=${text}\n`)
}

function config(login = user, secret = password, extra = {}) {
  return {
    host: '127.0.0.1',
    port,
    user: login,
    password: secret,
    database: 'postgres',
    application_name: 'node-matrix',
    connectionTimeoutMillis: 10_000,
    query_timeout: 20_000,
    ...extra,
  }
}

function newClient(login, secret, extra) {
  return track(new pg.Client(config(login, secret, extra)), `client ${login || user}`)
}

async function withClient(fn, login, secret, extra) {
  const client = newClient(login, secret, extra)
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

async function expectPgError(code, promise) {
  try {
    await promise
  } catch (err) {
    assert.equal(err.code, code, `SQLSTATE of "${err.message}"`)
    return err
  }
  assert.fail(`expected SQLSTATE ${code} but the query succeeded`)
}

async function runCase(name, fn) {
  const start = Date.now()
  try {
    await fn()
    out(`${name}.ok`, 'true')
  } catch (err) {
    failed.push(name)
    out(`${name}.error`, `${err.name}${err.code ? ` [${err.code}]` : ''}: ${err.message}`)
    console.error(`case ${name} failed:`, err)
  }
  out(`${name}.ms`, Date.now() - start)
}

// -- cases -----------------------------------------------------------------------------------

// Every login of the matrix (SCRAM first), and a wrong password gets the server's error.
async function auth() {
  for (const [login, secret] of logins) {
    const who = await withClient(
      async (c) => (await c.query('select current_user, session_user')).rows[0],
      login,
      secret,
    )
    out(`auth.${login}`, `${who.current_user}/${who.session_user}`)
    assert.deepEqual(who, { current_user: login, session_user: login })
  }
  const bad = newClient(user, `${password}-wrong`)
  const err = await expectPgError('28P01', bad.connect())
  out('auth.wrong_password.code', err.code)
  assert.match(err.message, /password authentication failed/)
}

// Queries without parameters use the simple protocol (Query message).
async function simple() {
  await withClient(async (c) => {
    const r = await c.query("select 1 as a, 'x'::text as b, null::int as c, 2.5::float8 as d, 'ünï' as e")
    out('simple.row', JSON.stringify(r.rows))
    assert.deepEqual(r.rows, [{ a: 1, b: 'x', c: null, d: 2.5, e: 'ünï' }])
    assert.equal(r.command, 'SELECT')
    assert.equal(r.rowCount, 1)

    const multi = await c.query('select 1 as a; select 2 as b, 3 as c')
    assert.ok(Array.isArray(multi), 'multi-statement text returns one result per statement')
    out('simple.multi', JSON.stringify(multi.map((m) => m.rows)))
    assert.deepEqual(multi.map((m) => m.rows), [[{ a: 1 }], [{ b: 2, c: 3 }]])

    const arrays = await c.query({ text: 'select 1, 2, 3', rowMode: 'array' })
    assert.deepEqual(arrays.rows, [[1, 2, 3]])

    const big = await c.query("select g, repeat('x', 200) as pad from generate_series(1, 20000) g")
    const sum = big.rows.reduce((acc, row) => acc + row.g, 0)
    const chars = big.rows.reduce((acc, row) => acc + row.pad.length, 0)
    out('simple.big', `${big.rows.length}/${sum}/${chars}`)
    assert.equal(`${big.rows.length}/${sum}/${chars}`, '20000/200010000/4000000')

    await c.query('create temp table node_simple(v int)')
    const ins = await c.query('insert into node_simple select generate_series(1, 5)')
    assert.equal(ins.command, 'INSERT')
    assert.equal(ins.rowCount, 5)
  })
}

// Queries with values use unnamed extended statements (Parse '' / Bind / Describe / Execute / Sync).
async function params() {
  await withClient(async (c) => {
    for (let k = 0; k < 10; k++) {
      const values = [k * 1_000_003 - 7, `héllo-${k} ✓`, { k, list: [k, 'x'] }, null, k % 2 === 0, `${2 ** 53 + k}`]
      const r = await c.query(
        'select $1::int + 1 as i, $2::text || $$!$$ as t, $3::jsonb as j, $4::int as nul, not $5::bool as b,' +
          ' $6::int8 as big',
        values,
      )
      assert.deepEqual(r.rows, [
        {
          i: values[0] + 1,
          t: `${values[1]}!`,
          j: values[2],
          nul: null,
          b: !values[4],
          big: values[5],
        },
      ])
    }
    const named = await c.query("select count(*)::int as n from pg_prepared_statements where name <> ''")
    out('params.named_on_server', named.rows[0].n)
    assert.equal(named.rows[0].n, 0, 'unnamed statements leave nothing named on the server')
    const bytes = Buffer.from([0, 1, 255, 10, 13])
    const y = await c.query('select $1::bytea as y', [bytes])
    assert.ok(bytes.equals(y.rows[0].y), 'bytea round trip')
    out('params.runs', 10)
  })
}

// Named statements: Parse 'q1' once, then Bind/Describe/Execute/Sync on every later call.
async function named() {
  await withClient(async (c) => {
    const results = []
    for (let k = 1; k <= 8; k++) {
      const r = await c.query({ name: 'q1', text: 'select $1::int * 2 as z, $2::text as t', values: [k, `v${k}`] })
      assert.deepEqual(r.rows, [{ z: k * 2, t: `v${k}` }])
      results.push(r.rows[0].z)
    }
    for (let k = 1; k <= 3; k++) {
      const r = await c.query({ name: 'q2', text: 'select count(*)::int as n from generate_series(1, $1::int)', values: [k * 10] })
      assert.equal(r.rows[0].n, k * 10)
    }
    out('named.results', results.join(','))
    const onServer = await c.query('select name from pg_prepared_statements order by name')
    const names = onServer.rows.map((r) => r.name).join(',')
    out('named.on_server', names)
    assert.equal(names, 'q1,q2')
    // Binary result format for a named statement.
    const bin = await c.query({ name: 'q3', text: 'select $1::int4 + 1 as x', values: [41], binary: true })
    assert.equal(bin.rows[0].x, 42)
    const bin2 = await c.query({ name: 'q3', text: 'select $1::int4 + 1 as x', values: [99], binary: true })
    assert.equal(bin2.rows[0].x, 100)
    out('named.binary', `${bin.rows[0].x},${bin2.rows[0].x}`)
  })
}

// BEGIN / ROLLBACK drops rows, BEGIN / COMMIT keeps them.
async function transaction() {
  await withClient(async (c) => {
    await c.query('create temp table node_tx(v int)')
    await c.query('BEGIN')
    const xid = (await c.query('select txid_current()::text as x')).rows[0].x
    await c.query('insert into node_tx values ($1), ($2)', [1, 2])
    assert.equal((await c.query('select txid_current()::text as x')).rows[0].x, xid, 'one transaction')
    await c.query('COMMIT')
    await c.query('BEGIN')
    await c.query('insert into node_tx values ($1), ($2)', [3, 4])
    const inside = await c.query('select array_agg(v order by v) as vs from node_tx')
    assert.deepEqual(inside.rows[0].vs, [1, 2, 3, 4])
    await c.query('ROLLBACK')
    const after = await c.query('select array_agg(v order by v) as vs from node_tx')
    out('tx.rows', after.rows[0].vs.join(','))
    assert.deepEqual(after.rows[0].vs, [1, 2])
  })
}

// Errors in the simple protocol, the extended protocol, a transaction and a named statement;
// the connection keeps working after each.
async function errors() {
  await withClient(async (c) => {
    const simpleErr = await expectPgError('22012', c.query('select 1/0'))
    out('errors.simple', simpleErr.code)
    assert.equal((await c.query('select 1 as one')).rows[0].one, 1)

    const extErr = await expectPgError('22P02', c.query('select $1::int as n', ['not a number']))
    out('errors.extended', extErr.code)
    assert.equal((await c.query('select $1::int as n', ['5'])).rows[0].n, 5)

    const syntax = await expectPgError('42601', c.query({ name: 'broken', text: 'selec 1', values: [] }))
    out('errors.syntax', syntax.code)

    await c.query('create temp table node_err(v int)')
    await c.query('BEGIN')
    await c.query('insert into node_err values (42)')
    await expectPgError('22012', c.query('select 1/0'))
    const aborted = await expectPgError('25P02', c.query('select 1'))
    out('errors.aborted', aborted.code)
    await c.query('ROLLBACK')
    const count = (await c.query('select count(*)::int as n from node_err')).rows[0].n
    out('errors.rows_after_rollback', count)
    assert.equal(count, 0)

    const q = { name: 'div', text: 'select 100 / $1::int as q' }
    assert.equal((await c.query({ ...q, values: [5] })).rows[0].q, 20)
    await expectPgError('22012', c.query({ ...q, values: [0] }))
    assert.equal((await c.query({ ...q, values: [4] })).rows[0].q, 25)
    out('errors.named_after_error', 'ok')
    assert.equal((await c.query("select 'still usable' as s")).rows[0].s, 'still usable')
  })
}

// A pool of several connections with queries in flight at the same time.
async function pool() {
  const p = track(new pg.Pool({ ...config(), max: 4 }), 'pool')
  try {
    const jobs = []
    for (let k = 0; k < 40; k++) {
      jobs.push(p.query('select $1::int * $1::int as sq, pg_backend_pid() as pid', [k]))
    }
    const results = await Promise.all(jobs)
    results.forEach((r, k) => assert.equal(r.rows[0].sq, k * k))
    const pids = new Set(results.map((r) => r.rows[0].pid))
    out('pool.queries', results.length)
    out('pool.backends', pids.size)
  } finally {
    await p.end()
  }
}

// pipeline: true (node-postgres >= 8.19) writes queries without waiting; one fails mid-pipeline.
async function pipeline() {
  const probe = new pg.Client(config(user, password, { pipeline: true }))
  if (probe.pipeline !== true) {
    out('pipeline.skipped', `pipeline mode not in pg ${require('pg/package.json').version}`)
    return
  }
  await withClient(
    async (c) => {
      const jobs = []
      for (let k = 0; k < 30; k++) {
        const text = k === 15 ? 'select 1/0 as v' : 'select $1::int as v'
        jobs.push(c.query(text, k === 15 ? [] : [k]).then((r) => r.rows[0].v, (e) => `error:${e.code}`))
      }
      const got = await Promise.all(jobs)
      out('pipeline.results', got.join(','))
      got.forEach((v, k) => assert.equal(v, k === 15 ? 'error:22012' : k))
      assert.equal((await c.query('select 1 as one')).rows[0].one, 1)
    },
    user,
    password,
    { pipeline: true },
  )
}

// LISTEN on one connection, NOTIFY from another: the notification arrives through the relay.
async function notify() {
  const listener = newClient()
  await listener.connect()
  try {
    const received = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no notification within 10 s')), 10_000)
      listener.on('notification', (msg) => {
        clearTimeout(timer)
        resolve(msg)
      })
    })
    await listener.query('LISTEN node_matrix')
    await withClient((c) => c.query("NOTIFY node_matrix, 'hello through the relay'"))
    const msg = await received
    out('notify.payload', `${msg.channel}:${msg.payload}`)
    assert.equal(`${msg.channel}:${msg.payload}`, 'node_matrix:hello through the relay')
  } finally {
    await listener.end()
  }
}

// Open and end() many short sessions: end() sends Terminate and the server closes the socket.
async function terminate() {
  const before = errorEvents.length
  for (let k = 0; k < 20; k++) {
    await withClient(async (c) => assert.equal((await c.query('select $1::int as k', [k])).rows[0].k, k))
  }
  await new Promise((resolve) => setTimeout(resolve, 200))
  out('terminate.sessions', 20)
  out('terminate.error_events', errorEvents.length - before)
}

async function main() {
  out('driver', require('pg/package.json').version)
  await runCase('auth', auth)
  await runCase('simple', simple)
  await runCase('params', params)
  await runCase('named', named)
  await runCase('tx', transaction)
  await runCase('errors', errors)
  await runCase('pool', pool)
  await runCase('pipeline', pipeline)
  await runCase('notify', notify)
  await runCase('terminate', terminate)
  // Let late events (after Terminate) arrive before counting them.
  await new Promise((resolve) => setTimeout(resolve, 200))
  out('client_error_events', errorEvents.length)
  errorEvents.forEach((e, i) => out(`client_error_event.${i}`, e))
  out('done', failed.length)
  process.exitCode = failed.length ? 1 : 0
}

main().catch((err) => {
  console.error(err)
  out('fatal', err.message)
  process.exit(1)
})
