#!/usr/bin/env node
// Scenario 7's Node.js peers: one run of Graphile Worker or pg-boss draining no-op jobs.
//
//   node bench/node/run.js '{"peer": "graphile-worker", "connectionString": "postgres://...", ...}'
//
// The database exists and is empty. This script installs the peer's schema, enqueues `jobs` no-op
// jobs in bulk and checks the count in SQL, all before the clock starts; then it starts the worker
// with the given settings. The clock starts when the first job runs and stops when the last
// completion has been written: every completion statement the peer sends is watched (a wrapper
// around node-postgres' `Client#query`, which changes nothing it sends) and the clock stops when
// the rows they completed add up to `jobs`. Then the worker stops, the queue is checked drained in
// SQL, and one JSON line is printed on stdout:
//
//   {"jobs": N, "seconds": S, "cpu": {"worker": s, "backends": s, "backendCount": n}, "version": "..."}
//
// CPU is read from /proc at both ends of the clock: this process (all its threads) and the
// PostgreSQL backends serving its database (found by their process titles, "postgres: ... <db> ...").
// Anything wrong (fewer jobs run, the queue not drained, a worker error) exits non-zero.
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const pg = require('pg')

const config = JSON.parse(process.argv[2] || '{}')
const JOBS = config.jobs
const TICKS = config.clockTicks || 100
const DATABASE = config.database
const QUEUE = 'noop'

function fail (message) {
  process.stderr.write(`bench/node/run.js (${config.peer}): ${message}\n`)
  process.exit(1)
}

// -- CPU, from /proc ---------------------------------------------------------------------------------

function procTicks (pid) {
  // utime + stime (fields 14 and 15), after the parenthesised command name, which may hold spaces.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { ticks: Number(fields[11]) + Number(fields[12]), start: fields[19] }
  } catch {
    return null
  }
}

function backendPids () {
  // A backend's title is "postgres: <cluster>: <user> <database> <host>(<port>) <state>".
  const needle = ` ${DATABASE} `
  const found = []
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let title
    try {
      title = fs.readFileSync(`/proc/${entry}/cmdline`, 'latin1')
    } catch {
      continue
    }
    if (title.startsWith('postgres: ') && title.replace(/\0/g, ' ').includes(needle)) found.push(Number(entry))
  }
  return found
}

function cpuSnapshot (pids) {
  const backends = new Map()
  for (const pid of pids) {
    const read = procTicks(pid)
    if (read) backends.set(`${pid}/${read.start}`, read.ticks)
  }
  const usage = process.cpuUsage()
  return { worker: (usage.user + usage.system) / 1e6, backends }
}

// -- the clock: first job run, last completion written ----------------------------------------------

const clock = { ran: 0, completed: 0, first: null, last: null, startCpu: null, endCpu: null, pids: [] }
let onDrained = () => {}

function jobRan (count) {
  if (clock.first === null) {
    clock.first = process.hrtime.bigint()
    clock.pids = backendPids()
    clock.startCpu = cpuSnapshot(clock.pids)
  }
  clock.ran += count
}

function completionWritten (rows) {
  clock.completed += rows
  if (clock.completed >= JOBS && clock.last === null) {
    clock.last = process.hrtime.bigint()
    clock.endCpu = cpuSnapshot(clock.pids)
    // Backends that connected after the first job: all their CPU was spent during the run.
    const late = backendPids().filter((pid) => !clock.pids.includes(pid))
    for (const [key, ticks] of cpuSnapshot(late).backends) clock.endCpu.backends.set(key, ticks)
    onDrained()
  }
}

// Watch the completion statements: node-postgres promise and callback forms both pass through here.
function watchQueries (isCompletion, rowsOf) {
  const query = pg.Client.prototype.query
  pg.Client.prototype.query = function (textOrConfig, values, callback) {
    const text = typeof textOrConfig === 'string' ? textOrConfig : textOrConfig && textOrConfig.text
    if (typeof text !== 'string' || !isCompletion(text)) return query.apply(this, arguments)
    if (typeof values === 'function') {
      callback = values
      values = undefined
    }
    if (typeof callback === 'function') {
      return query.call(this, textOrConfig, values, (error, result) => {
        if (!error) completionWritten(rowsOf(result))
        callback(error, result)
      })
    }
    return query.call(this, textOrConfig, values).then((result) => {
      completionWritten(rowsOf(result))
      return result
    })
  }
}

function result (version) {
  if (clock.last === null) fail(`ran ${clock.ran} of ${JOBS} jobs, completed ${clock.completed}`)
  let backends = 0
  for (const [key, ticks] of clock.endCpu.backends) backends += ticks - (clock.startCpu.backends.get(key) || 0)
  return {
    jobs: JOBS,
    ran: clock.ran,
    seconds: Number(clock.last - clock.first) / 1e9,
    cpu: {
      worker: clock.endCpu.worker - clock.startCpu.worker,
      backends: backends / TICKS,
      backendCount: clock.endCpu.backends.size
    },
    version
  }
}

async function scalar (sql, params) {
  const client = new pg.Client({ connectionString: config.connectionString })
  await client.connect()
  try {
    const { rows } = await client.query(sql, params)
    return Number(Object.values(rows[0])[0])
  } finally {
    await client.end()
  }
}

function packageVersion (name) {
  const file = path.join(__dirname, 'node_modules', name, 'package.json')
  return JSON.parse(fs.readFileSync(file, 'utf8')).version
}

function drained () {
  return new Promise((resolve) => {
    onDrained = resolve
    if (clock.last !== null) resolve()
  })
}

// -- Graphile Worker ----------------------------------------------------------------------------------

async function graphileWorker () {
  const { run, makeWorkerUtils } = require('graphile-worker')
  const logger = quietGraphileLogger()
  const utils = await makeWorkerUtils({ connectionString: config.connectionString, logger })
  try {
    await utils.migrate()
    const CHUNK = 10000
    for (let start = 0; start < JOBS; start += CHUNK) {
      const specs = []
      for (let i = start; i < Math.min(JOBS, start + CHUNK); i++) specs.push({ identifier: QUEUE, payload: {} })
      await utils.addJobs(specs)
    }
  } finally {
    await utils.release()
  }
  const queued = await scalar('select count(*) from graphile_worker._private_jobs')
  if (queued !== JOBS) fail(`enqueued ${queued} jobs, not ${JOBS}`)

  // Completion deletes the job row: by id (one job), or by an array of ids (a batch).
  watchQueries(
    (text) => /^\s*delete from "?graphile_worker"?\._private_jobs/i.test(text),
    (res) => res.rowCount
  )
  const settings = config.settings || {}
  const runner = await run({
    connectionString: config.connectionString,
    noHandleSignals: true,
    logger,
    taskList: { [QUEUE]: async () => { jobRan(1) } },
    ...(settings.concurrency ? { concurrency: settings.concurrency } : {}),
    ...(settings.maxPoolSize ? { maxPoolSize: settings.maxPoolSize } : {}),
    preset: { worker: settings.preset || {} }
  })
  let stopping = false
  const early = runner.promise.then(() => stopping || fail('the worker stopped before the queue was drained'))
  await Promise.race([drained(), early])
  stopping = true
  await runner.stop()
  const left = await scalar('select count(*) from graphile_worker._private_jobs')
  if (left !== 0) fail(`${left} jobs are still in the queue`)
  return result(packageVersion('graphile-worker'))
}

function quietGraphileLogger () {
  const { Logger } = require('graphile-worker')
  return new Logger(() => (level, message) => {
    if (level === 'error' || level === 'warning') process.stderr.write(`graphile-worker ${level}: ${message}\n`)
  })
}

// -- pg-boss ------------------------------------------------------------------------------------------

async function pgBoss () {
  const PgBoss = require('pg-boss')
  const settings = config.settings || {}
  const boss = new PgBoss({ connectionString: config.connectionString, ...(settings.constructor || {}) })
  const errors = []
  boss.on('error', (error) => errors.push(error))
  await boss.start()
  await boss.createQueue(QUEUE)
  const CHUNK = 10000
  for (let start = 0; start < JOBS; start += CHUNK) {
    const jobs = []
    for (let i = start; i < Math.min(JOBS, start + CHUNK); i++) jobs.push({ name: QUEUE, data: {} })
    await boss.insert(jobs)
  }
  const queued = await scalar("select count(*) from pgboss.job where name = $1 and state = 'created'", [QUEUE])
  if (queued !== JOBS) fail(`enqueued ${queued} jobs, not ${JOBS}`)

  // Completion is one UPDATE ... RETURNING per fetched batch, counted by its SELECT COUNT(*).
  watchQueries(
    (text) => /UPDATE\s+pgboss\.job\s+SET\s+completed_on = now\(\),\s+state = 'completed'/.test(text),
    (res) => Number(res.rows[0].count)
  )
  const work = settings.work || {}
  const team = settings.workers || 1
  for (let i = 0; i < team; i++) {
    await boss.work(QUEUE, work, async (jobs) => { jobRan(jobs.length) })
  }
  await drained()
  await boss.stop({ graceful: true, wait: true })
  if (errors.length) fail(`worker errors: ${errors.map((e) => e.message).join('; ')}`)
  const left = await scalar("select count(*) from pgboss.job where name = $1 and state <> 'completed'", [QUEUE])
  if (left !== 0) fail(`${left} jobs are not completed`)
  return result(packageVersion('pg-boss'))
}

// -- main ---------------------------------------------------------------------------------------------

const PEERS = { 'graphile-worker': graphileWorker, 'pg-boss': pgBoss }

async function main () {
  if (!PEERS[config.peer]) fail(`unknown peer; known: ${Object.keys(PEERS).join(', ')}`)
  if (!(JOBS > 0) || !DATABASE || !config.connectionString) fail('needs jobs, database and connectionString')
  const outcome = await PEERS[config.peer]()
  process.stdout.write(JSON.stringify(outcome) + '\n')
  process.exit(0)
}

main().catch((error) => fail(error && error.stack ? error.stack : String(error)))
