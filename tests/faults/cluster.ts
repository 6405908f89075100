/**
 * The cluster fault scenario: the whole system (the fault harness's child processes) on a local three-node RabbitMQ
 * cluster (infra/rabbitmq-cluster.sh), every service given the three nodes in RABBITMQ_URL, and the node that leads
 * the images request queue taken away mid-batch. Quorum queues keep their messages on the two nodes left, which
 * elect a new leader; every client on the lost node reconnects to another. Pass: every accepted job completes, none
 * is lost, none has a result applied twice.
 *
 * `bun tests/faults/cluster.ts [jobs]` runs the full scenario (a batch uploaded partly during the failover; then the
 * node back, and the new leader SIGKILLed) and prints its matrix; cluster.test.ts runs a short one in CI. Both use
 * their own cluster (nodes mediafaults1-3@localhost on ports 5691-5693), removed at the end; the system RabbitMQ on
 * 5672 is not touched beyond the harness's check that it runs.
 */
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { readDatabaseConfig } from '../../services/api/config.ts'
import { openStore } from '../../services/api/store/open.ts'
import { removeDataDirs } from '../helpers/env.ts'
import { startInfra, stopInfra } from '../helpers/infra.ts'
import { until } from './chaos.ts'
import { afterFaults, imageFiles, startSystem, type Batch, type Row, type System } from './harness.ts'

const SCRIPT = join(import.meta.dir, '../../infra/rabbitmq-cluster.sh')
const FINAL = new Set(['completed', 'failed', 'cancelled'])
/** The processors' log line for a job whose delivery went back to the broker with its channel (events.ts). */
const INTERRUPTED = /"msg":"job interrupted \(/
/** A publish the broker refused (basic.nack), as the processors and the API log it (publisher.ts). */
const NACKED = /the broker refused a message to .*: message nacked/

export interface Cluster {
  /** One URL per node, node 1 first. */
  urls: string[]
  /** `node`'s name, e.g. mediafaults2@localhost. */
  nodeName(node: number): string
  /** rabbitmqctl against node 1-3 (as the cluster's user, with its cookie); throws on failure. */
  ctl(node: number, ...args: string[]): Promise<string>
  /** The node (1-3) leading a quorum queue, asked of a running node. */
  leaderOf(queue: string, askNode?: number): Promise<number>
  /** Consumers per queue, as the broker lists them, asked of a running node. */
  consumers(askNode?: number): Promise<Record<string, number>>
  /** Client connections per node (index 0 is node 1), asked of a running node. */
  connectionsByNode(askNode?: number): Promise<number[]>
  /** Takes a node away: `stop` shuts it down cleanly, `kill` SIGKILLs its Erlang VM. Resolves once it is gone. */
  stopNode(node: number, how: 'stop' | 'kill'): Promise<void>
  /** Starts whatever node is down and waits until all three serve again. */
  heal(): Promise<void>
  /** Stops every node and removes the cluster's data. */
  remove(): Promise<void>
}

/** Runs infra/rabbitmq-cluster.sh with the cluster's settings; throws with its stderr on failure or past the deadline. */
async function clusterScript(settings: Record<string, string>, args: string[], timeoutMs: number): Promise<string> {
  const child = Bun.spawn(['bash', SCRIPT, ...args], {
    env: { ...process.env, ...settings },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  clearTimeout(timer)
  if (code !== 0)
    throw new Error(
      `rabbitmq-cluster.sh ${args.join(' ')} exited with ${child.signalCode ? `${child.signalCode} (past ${timeoutMs} ms)` : code}: ${stderr.trim()}`
    )
  return stdout
}

/** A fresh three-node cluster (whatever an earlier run left of it is removed first). */
export async function startCluster(name = 'mediafaults', port = 5691): Promise<Cluster> {
  const dir = join(process.env.TMPDIR ?? '/tmp', `rabbitmq-cluster-${name}`)
  const settings = {
    RABBITMQ_CLUSTER_NAME: name,
    RABBITMQ_CLUSTER_PORT: String(port),
    RABBITMQ_CLUSTER_DIR: dir,
    RABBITMQ_CLUSTER_TIMEOUT: '60',
  }
  const script = (args: string[], timeoutMs = 150_000) => clusterScript(settings, args, timeoutMs)
  await script(['clean'])
  const urls = (await script(['start'])).trim().split(',')
  const nodeName = (node: number) => `${name}${node}@localhost`
  const nodeOf = (nodeName: string) => {
    const node = Number(new RegExp(`^${name}(\\d)@`).exec(nodeName)?.[1])
    if (!node) throw new Error(`${nodeName} is not a node of the cluster`)
    return node
  }
  const ctl = (node: number, ...args: string[]) => script(['ctl', String(node), ...args], 30_000)
  const json = async <T>(node: number, ...args: string[]) =>
    JSON.parse(await ctl(node, '-q', ...args, '--formatter', 'json')) as T

  return {
    urls,
    nodeName,
    ctl,
    async leaderOf(queue, askNode = 1) {
      const queues = await json<{ name: string; leader: string }[]>(askNode, 'list_queues', 'name', 'leader')
      const row = queues.find((q) => q.name === queue)
      if (!row) throw new Error(`the cluster has no queue ${queue}`)
      return nodeOf(row.leader)
    },
    async consumers(askNode = 1) {
      const queues = await json<{ name: string; consumers: number }[]>(askNode, 'list_queues', 'name', 'consumers')
      return Object.fromEntries(queues.map((q) => [q.name, q.consumers]))
    },
    async connectionsByNode(askNode = 1) {
      const counts = [0, 0, 0]
      // A connection's `port` is the port it reached, so the node it is on.
      for (const c of await json<{ port: number }[]>(askNode, 'list_connections', 'port')) counts[c.port - port]!++
      return counts
    },
    async stopNode(node, how) {
      const pid = Number(await Bun.file(join(dir, `node${node}`, 'pid')).text())
      if (how === 'stop') await ctl(node, '-q', 'stop')
      else process.kill(pid, 'SIGKILL')
      await until(() => !alive(pid), 30_000, `${nodeName(node)} (pid ${pid}) exiting`)
    },
    async heal() {
      await script(['start'])
    },
    async remove() {
      await script(['clean'])
    },
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export interface ClusterRound {
  row: Row
  problems: string[]
  /** The node taken away (1-3), and the same with its name and how. */
  node: number
  stopped: string
  /** The node leading the request queue once the clients were back. */
  leaderAfter: string
  /** Connections per node just before the fault (index 0 is node 1). */
  connectionsBefore: number[]
  /** Jobs the processors held when the node went. */
  held: number
  /** Of those, the ones whose channel went with the node: stopped, and delivered again (processors' logs). */
  interrupted: number
  /**
   * Publishes the broker refused after the fault (updates, results, requests). RabbitMQ 3.10 nacks every publish of a
   * channel to a quorum queue whose first publish there found the queue's recorded leader down, for as long as that
   * node stays down (infra/CLUSTER.md); a refused result sends its job round again, towards the delivery limit.
   */
  nacked: number
  /** Jobs with a final state applied more than once (from the API's job history). */
  appliedTwice: number
  /** Seconds from the node's loss until every working queue had its consumers again. */
  consumersBackSeconds: number
}

export interface RoundOptions {
  scenario: string
  /** Image jobs uploaded before the fault. */
  jobs: number
  /** More image jobs uploaded right after the node is gone (while clients fail over). */
  jobsDuringFailover?: number
  how: 'stop' | 'kill'
  /** The fault comes once this many of the first jobs are final (default a quarter). */
  finalBeforeFault?: number
  timeoutMs?: number
}

/**
 * One round on a running system: uploads a batch, waits until part of it is done, takes away the node leading the
 * images request queue, optionally uploads more at once, waits until every job is final with the node still down,
 * and reconciles (harness.ts: lost, duplicated, outputs, crashes, consumers back). A stopped node stays down; a
 * SIGKILLed one is started again before the reconciliation (see below).
 */
export async function clusterRound(sys: System, cluster: Cluster, options: RoundOptions): Promise<ClusterRound> {
  const started = Date.now()
  const request = sys.queues('images').request
  const files = await imageFiles(options.jobs)
  const later = options.jobsDuringFailover ? await imageFiles(options.jobsDuringFailover) : []
  // Asked before the batch: nothing moves a quorum queue's leader but a fault, and the fault must not wait for this.
  const leader = await cluster.leaderOf(request, await runningNode(cluster))
  const connectionsBefore = await cluster.connectionsByNode(leader)
  const first = await sys.uploadAll(files)
  const mid = options.finalBeforeFault ?? Math.ceil(options.jobs / 4)
  await until(
    async () => (await finalCount(sys, first.accepted)) >= mid,
    60_000,
    `${mid} of the first ${options.jobs} jobs final`,
    20
  )
  // Mid-batch: the processors hold jobs when the node goes.
  await until(() => heldJobs(sys) > 0, 30_000, 'the image processors holding a job', 2)
  const held = heldJobs(sys)
  const interruptedBefore = sys.logCount(INTERRUPTED)
  const nackedBefore = sys.logCount(NACKED)
  const lostAt = Date.now()
  await cluster.stopNode(leader, options.how)
  const during = later.length ? await sys.uploadAll(later) : undefined
  const survivor = await runningNode(cluster)
  // Asked of the broker's own listing: after a SIGKILL, a quorum queue keeps the dead node's consumers as "suspected
  // down" until that node is back (their messages are returned at once), and a queue.declare-ok still counts them.
  const expected = Object.entries(sys.expectedConsumers())
  await until(
    async () => {
      const counts = await cluster.consumers(survivor)
      return expected.every(([queue, n]) => counts[queue] === n)
    },
    60_000,
    'every working queue having its consumers again',
    250
  ).catch(async (error) => {
    // What the cluster holds, for the failure message: queues, their leaders and consumers, the connections.
    const state = await Promise.all([
      cluster.ctl(survivor, '-q', 'list_queues', 'name', 'leader', 'online', 'consumers', 'messages'),
      cluster.ctl(survivor, '-q', 'list_connections', 'port', 'peer_port', 'state', 'channels'),
    ]).catch((e: Error) => [e.message])
    throw new Error(`${(error as Error).message}\n${state.join('\n')}`)
  })
  const consumersBackSeconds = Math.round((Date.now() - lostAt) / 100) / 10
  const leaderAfter = cluster.nodeName(await cluster.leaderOf(request, survivor))
  // Every job must finish on the two nodes left, before the lost one is back.
  const ids = [...first.accepted, ...(during?.accepted ?? [])]
  const finalWhileDown = await sys.waitForQuiet(ids, options.timeoutMs ?? 90_000)
  // The harness counts consumers through queue.declare-ok, which counts a SIGKILLed node's consumers until it is back.
  if (options.how === 'kill') await cluster.heal()

  const batch: Batch = during
    ? {
        sent: first.sent + during.sent,
        accepted: [...first.accepted, ...during.accepted],
        refused: [...first.refused, ...during.refused],
      }
    : first
  const stopped = `${cluster.nodeName(leader)} (${options.how === 'stop' ? 'rabbitmqctl stop' : 'SIGKILL'})`
  const connections = `${connectionsBefore[leader - 1]} of ${connectionsBefore.reduce((a, b) => a + b, 0)} connections`
  const interrupted = sys.logCount(INTERRUPTED) - interruptedBefore
  const nacked = sys.logCount(NACKED) - nackedBefore
  const notes =
    `${stopped} with ${mid}+ of ${options.jobs} final and ${held} running; it held ${connections}; ` +
    `${interrupted} running job(s) interrupted and redelivered; ${nacked} publish(es) nacked; new leader ${leaderAfter}; ` +
    `consumers back in ${consumersBackSeconds} s`
  const { row, problems, states } = await sys.reconcile(options.scenario, batch, { started, notes, timeoutMs: 10_000 })
  if (!finalWhileDown)
    problems.push(
      `not every job was final within ${(options.timeoutMs ?? 90_000) / 1000} s of ${stopped}, while it was down`
    )
  const appliedTwice = await countAppliedTwice(
    sys,
    states.flatMap((m) => (m ? [m.jobId] : []))
  )
  if (appliedTwice) problems.push(`${appliedTwice} job(s) had a final state applied more than once`)
  return {
    row,
    problems,
    node: leader,
    stopped,
    leaderAfter,
    connectionsBefore,
    held,
    interrupted,
    nacked,
    appliedTwice,
    consumersBackSeconds,
  }
}

/** A node that serves now (the first whose rabbitmqctl answers). */
async function runningNode(cluster: Cluster): Promise<number> {
  for (const node of [1, 2, 3]) {
    if (
      await cluster.ctl(node, '-q', 'await_startup', '--timeout', '1').then(
        () => true,
        () => false
      )
    )
      return node
  }
  throw new Error('no node of the cluster is running')
}

/** Jobs the image processors hold now: a processor's work directory for a job exists exactly while it does. */
function heldJobs(sys: System): number {
  return sys.images.reduce((n, p) => {
    const dir = join(sys.env.IMAGES_TMP_DIR!, String(p.pid))
    return n + (existsSync(dir) ? readdirSync(dir).length : 0)
  }, 0)
}

async function finalCount(sys: System, ids: string[]): Promise<number> {
  let n = 0
  for (const id of ids) if (FINAL.has((await sys.media(id))?.status ?? '')) n++
  return n
}

/** Jobs whose history shows more than one change into a final state: a duplicate result applied. */
async function countAppliedTwice(sys: System, jobIds: string[]): Promise<number> {
  const store = await openStore(readDatabaseConfig(sys.env).database)
  try {
    let twice = 0
    for (const jobId of jobIds)
      if ((await store.media.history(jobId)).filter((h) => FINAL.has(h.status)).length > 1) twice++
    return twice
  } finally {
    await store.close()
  }
}

/** Starts the system on the cluster: two image processors, every service given all three nodes. */
export const startSystemOnCluster = (cluster: Cluster) =>
  startSystem({ images: 2, env: { RABBITMQ_URL: cluster.urls.join(','), IMAGE_CONCURRENCY: '2' } })

function summary(rounds: ClusterRound[]): string {
  const columns = [
    'scenario',
    'jobs sent',
    'accepted',
    'completed',
    'failed',
    'lost',
    'final state changed',
    'applied twice',
    'node stopped',
    'connections on it',
    'jobs running',
    'jobs interrupted',
    'publishes nacked',
    'new leader',
    'consumers back (s)',
    'seconds',
  ]
  const rows = rounds.map((r) => [
    r.row.scenario,
    r.row.sent,
    r.row.accepted,
    r.row.completed,
    r.row.failed,
    r.row.lost,
    r.row.duplicated,
    r.appliedTwice,
    r.stopped,
    `${r.connectionsBefore[r.node - 1]} of ${r.connectionsBefore.reduce((a, b) => a + b, 0)}`,
    r.held,
    r.interrupted,
    r.nacked,
    r.leaderAfter,
    r.consumersBackSeconds,
    r.row.seconds,
  ])
  return [
    `| ${columns.join(' | ')} |`,
    `|${columns.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n')
}

if (import.meta.main) {
  const jobs = Number(process.argv[2] ?? 60)
  const began = Date.now()
  await startInfra()
  const cluster = await startCluster()
  console.log(`cluster up in ${Math.round((Date.now() - began) / 1000)} s: ${cluster.urls.join(',')}`)
  let sys: System | undefined
  const rounds: ClusterRound[] = []
  let failed = false
  try {
    sys = await startSystemOnCluster(cluster)
    rounds.push(
      await clusterRound(sys, cluster, {
        scenario: 'C1. request queue leader stopped mid-batch',
        jobs,
        jobsDuringFailover: Math.ceil(jobs / 3),
        how: 'stop',
      })
    )
    await cluster.heal()
    rounds.push(
      await clusterRound(sys, cluster, {
        scenario: 'C2. node back; the new leader SIGKILLed mid-batch',
        jobs,
        jobsDuringFailover: Math.ceil(jobs / 3),
        how: 'kill',
      })
    )
  } catch (error) {
    failed = true
    console.error(error)
  } finally {
    await sys?.stop()
    afterFaults()
    await cluster.remove()
    await stopInfra()
    removeDataDirs()
  }
  console.log(`\nCluster scenario (${Math.round((Date.now() - began) / 1000)} s in all)\n${summary(rounds)}\n`)
  for (const round of rounds)
    for (const problem of round.problems) console.error(`problem (${round.row.scenario}): ${problem}`)
  const ok =
    !failed &&
    rounds.length === 2 &&
    rounds.every((r) => r.problems.length === 0 && r.row.lost === 0 && r.row.completed === r.row.accepted)
  process.exit(ok ? 0 : 1)
}
