/**
 * Figure 8: the outbox relay (the API's way to the broker: rows written with their job, published with confirms,
 * marked sent) draining a backlog, against raw amqplib publishing the same messages to the same queue on a
 * confirm channel and awaiting every confirm. Both run in this process, on an SQLite store in a temporary file.
 */
import amqp from 'amqplib'
import { join } from 'node:path'
import { ImageRequestSchema, encodeMessage, queueNames } from '@app/shared'
import { silentLogger } from '@app/shared/ops'
import { connectBroker } from '../../../services/api/jobs/broker.ts'
import { openSqliteStore } from '../../../services/api/store/open.ts'
import { createOutbox } from '../../../services/api/jobs/outbox.ts'
import { originalKey, outputPrefix } from '../../../services/api/uploads/object-keys.ts'
import { builtInRecipe } from '../../../services/api/uploads/presets.ts'
import { RABBITMQ_URL, trackNamespace } from '../../helpers/infra.ts'
import { median, spread, type Bench, type Figure } from '../stats.ts'

export async function outboxFigure(bench: Bench): Promise<Figure> {
  bench.say('figure 8: the outbox relay')
  const system = `bench${crypto.randomUUID().slice(0, 6)}`
  trackNamespace(system)
  const queue = queueNames(system, 'images').request
  const log = silentLogger()
  const store = openSqliteStore(join(bench.work, 'outbox.sqlite'))
  const broker = await connectBroker({
    url: RABBITMQ_URL,
    system,
    publishTimeoutMs: 30_000,
    instanceId: crypto.randomUUID(),
    log,
  })
  const outbox = createOutbox({ store, broker, graceMs: 0, log })
  const connection = await amqp.connect(RABBITMQ_URL)
  const raw = await connection.createConfirmChannel()
  const count = bench.quick ? 1000 : 5000
  try {
    /** `count` uploads' rows, as the API writes them: media, job and its request in one transaction each. */
    const backlog = async () => {
      const bodies: Uint8Array[] = []
      for (let i = 0; i < count; i++) {
        const [id, jobId] = [crypto.randomUUID(), crypto.randomUUID()]
        const source = { bucket: 'media', key: originalKey(system, id), format: 'jpeg', size: 1000 }
        const body = encodeMessage(ImageRequestSchema, {
          version: 1,
          jobId,
          mediaId: id,
          source,
          output: { bucket: 'media', prefix: outputPrefix(system, jobId) },
          recipe: builtInRecipe('image'),
        })
        bodies.push(body)
        await store.media.create({
          id,
          tenant: 'bench',
          filename: null,
          kind: 'image',
          format: 'jpeg',
          size: 1000,
          bucket: 'media',
          sourceKey: source.key,
          jobId,
          type: 'images',
          request: { messageId: crypto.randomUUID(), jobId, queue, type: 'job.request', body },
        })
      }
      return bodies
    }
    const relayed: number[] = []
    const direct: number[] = []
    for (let round = 0; round < (bench.quick ? 1 : 3); round++) {
      const bodies = await backlog()
      let started = performance.now()
      while ((await store.outbox.backlog()).count > 0) await outbox.relay()
      relayed.push(count / ((performance.now() - started) / 1000))
      await raw.purgeQueue(queue)

      started = performance.now()
      for (const body of bodies)
        raw.publish('', queue, Buffer.from(body), {
          persistent: true,
          contentType: 'application/json',
          type: 'job.request',
          messageId: crypto.randomUUID(),
        })
      await raw.waitForConfirms()
      direct.push(count / ((performance.now() - started) / 1000))
      await raw.purgeQueue(queue)
    }
    const ratio = median(relayed) / median(direct)
    return {
      id: 8,
      what: `outbox relay draining ${count} requests to a quorum queue, confirmed and marked sent (msg/s)`,
      value: `${median(relayed).toFixed(0)} (${spread(relayed, 0)})`,
      baseline: `raw amqplib, confirm channel, all confirms awaited: ${median(direct).toFixed(0)} (${spread(direct, 0)})`,
      ratio,
      target: '≥ 0.9 of raw',
      pass: ratio >= 0.9,
      data: { relay: relayed, raw: direct },
    }
  } finally {
    await connection.close().catch(() => {})
    await broker.close()
    await store.close()
  }
}
