/**
 * The cancel fanout: each processor instance binds an exclusive, auto-deleted queue of its own to
 * `<system>.media.cancel` and hears every cancel. Missing one is safe: the job's cancel marker says it too.
 */
import { decodeMessage } from '../codec.ts'
import { CancelSchema } from '../messages.ts'
import { cancelExchange } from '../names.ts'
import type { Logger } from '../ops/log.ts'
import type { AmqpModel } from '../amqp/types.ts'

export async function listenForCancels(
  model: AmqpModel,
  system: string,
  onCancel: (jobId: string) => void,
  log: Logger
): Promise<void> {
  const channel = await model.createChannel()
  channel.on('error', (error) => log.error({ err: error }, `cancel channel error: ${error.message}`))
  const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true })
  await channel.bindQueue(queue, cancelExchange(system), '')
  await channel.consume(
    queue,
    (message) => {
      if (!message) return
      const decoded = decodeMessage(CancelSchema, message.content)
      if (!decoded.ok) return log.error({ reason: decoded.reason }, `ignoring a malformed cancel: ${decoded.reason}`)
      onCancel(decoded.value.jobId)
    },
    { noAck: true }
  )
}
