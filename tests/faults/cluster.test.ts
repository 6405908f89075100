/**
 * Fault test, broker cluster: the system on a local three-node RabbitMQ cluster with every service given the three
 * URLs, and the node leading the images request queue stopped mid-batch (the short form of
 * `bun tests/faults/cluster.ts`, which also uploads during the failover and SIGKILLs a second leader).
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { useInfra } from '../helpers/infra.ts'
import { startCluster, clusterRound, startSystemOnCluster, type Cluster } from './cluster.ts'
import { afterFaults } from './harness.ts'

await useInfra()

let cluster: Cluster | undefined
beforeAll(async () => {
  cluster = await startCluster()
}, 150_000)
afterAll(async () => {
  afterFaults()
  await cluster?.remove()
}, 60_000)

test('the node leading the request queue stopped mid-batch: the clients move to the other nodes and every job completes once', async () => {
  const sys = await startSystemOnCluster(cluster!)
  try {
    const round = await clusterRound(sys, cluster!, {
      scenario: 'C1. request queue leader stopped mid-batch (short)',
      jobs: 16,
      how: 'stop',
      timeoutMs: 45_000,
    })
    expect(round.problems).toEqual([])
    expect(round.row).toMatchObject({ sent: 16, accepted: 16, completed: 16, failed: 0, lost: 0, duplicated: 0 })
    expect(round.appliedTwice).toBe(0)
    // Quorum queues are led from the node of the client that declared them (the API, started first): so a client failed over.
    expect(round.connectionsBefore[round.node - 1]).toBeGreaterThan(0)
    // The queue lives on: its leader moved to a node that still runs.
    expect(round.leaderAfter).not.toBe(cluster!.nodeName(round.node))
  } finally {
    await sys.stop()
  }
}, 120_000)
