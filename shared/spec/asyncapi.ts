/**
 * The AsyncAPI 3.0 document of the protocol, built from the same data the code uses: the topology
 * (`topology.ts`), the names (`names.ts`) and the messages' JSON Schemas. It describes a processor; a backend does
 * the opposite of each operation. `generate.ts` writes it to `shared/asyncapi.json`.
 */
import type { JsonSchema } from '@valibot/to-json-schema'
import { MAX_MESSAGE_BYTES, MESSAGE_CONTENT_TYPE } from '../codec.ts'
import { CLASS_PRIORITY, MEDIA_KINDS, MEDIA_TYPES, type MediaType } from '../names.ts'
import { ATTEMPTS_HEADER, DELIVERY_LIMIT, topology, type QueueSpec } from '../topology.ts'
import { TRACEPARENT } from '../trace.ts'

/** Addresses use the namespace as a parameter; this placeholder stands for it while the topology is built. */
const SYSTEM = '{system}'
const BINDING_VERSION = '0.3.0'

type Doc = Record<string, unknown>

export function asyncApiDocument(schemas: Record<string, JsonSchema>): Doc {
  const channels: Doc = {}
  const operations: Doc = {}
  const messages: Doc = {}
  const parameters = {
    system: { description: 'The deployment namespace: 1-63 of a-z, 0-9, "_", "-", starting with a letter or digit.' },
  }
  const payload = (file: string) => ({
    schemaFormat: 'application/schema+json;version=draft-07',
    schema: schemas[file]!,
  })
  const message = (name: string, file: string, messageType: string, extra: Doc = {}) => {
    const schema = schemas[file] as { title?: string; description?: string }
    messages[name] = {
      name: schema.title,
      title: schema.title,
      summary: schema.description,
      contentType: MESSAGE_CONTENT_TYPE,
      correlationId: {
        description: 'The job id, as the AMQP correlation_id property.',
        location: '$message.header#/correlation_id',
      },
      payload: payload(file),
      bindings: { amqp: { messageType, bindingVersion: BINDING_VERSION } },
      ...extra,
    }
    return { $ref: `#/components/messages/${name}` }
  }
  const queueChannel = (spec: QueueSpec, description: string, refs: Doc) => ({
    address: spec.name,
    description,
    parameters,
    messages: refs,
    bindings: {
      amqp: {
        is: 'queue',
        queue: { name: spec.name, durable: spec.options.durable, exclusive: false, autoDelete: false, vhost: '/' },
        bindingVersion: BINDING_VERSION,
      },
    },
    // AMQP bindings have no field for queue arguments; RabbitMQ refuses a declaration whose arguments differ.
    'x-queue-arguments': spec.options.arguments,
  })
  const operation = (
    action: 'send' | 'receive',
    channel: string,
    messageNames: string[],
    summary: string,
    mandatory: boolean,
    priority?: number
  ) => ({
    action,
    summary,
    channel: { $ref: `#/channels/${channel}` },
    messages: messageNames.map((name) => ({ $ref: `#/channels/${channel}/messages/${name}` })),
    bindings: {
      amqp: {
        deliveryMode: 2,
        mandatory,
        ack: action === 'receive',
        ...(priority === undefined ? {} : { priority }),
        bindingVersion: BINDING_VERSION,
      },
    },
  })

  /** Optional on every job message: the W3C trace the job belongs to (PROTOCOL.md, section 3). */
  const traceparent = {
    type: 'string',
    pattern: '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$',
    description:
      "W3C Trace Context: on a request, the backend's trace; on an update or result, the processor's span of the same trace. Optional; a malformed one is ignored.",
  }
  const traced = { headers: { type: 'object', properties: { [TRACEPARENT]: traceparent } } }
  const update = message('jobUpdate', 'job-update', 'job.update', traced)
  for (const type of MEDIA_TYPES) {
    const spec = topology(SYSTEM, type)
    const queue = (suffix: string) => spec.queues.find((q) => q.name.endsWith(`.${suffix}`))!
    const Type = { images: 'Image', videos: 'Video', audio: 'Audio' }[type]
    const request = message(`${type}Request`, `${singular(type)}-request`, 'job.request', {
      headers: {
        type: 'object',
        properties: {
          [ATTEMPTS_HEADER]: {
            type: 'integer',
            minimum: 0,
            description:
              'On a request a processor published again: the attempts of the job that counted before this copy. Absent: 0.',
          },
          [TRACEPARENT]: traceparent,
        },
      },
    })
    const result = message(`${type}Result`, `${singular(type)}-result`, 'job.result', traced)
    channels[`${type}Request`] = queueChannel(
      queue('request'),
      `Interactive ${singular(type)} jobs (someone waits for them), one message each, from the backend. A processor starts these before bulk ones.`,
      { [`${type}Request`]: request }
    )
    channels[`${type}Bulk`] = queueChannel(
      queue('bulk'),
      `Bulk ${singular(type)} jobs (reprocessing, re-drives, imports): the same requests, started only when no interactive one waits, on all but one of a processor's slots (its one slot when it has one).`,
      { [`${type}Request`]: request }
    )
    channels[`${type}Updates`] = queueChannel(queue('updates'), `Progress of ${type} jobs, to the backend.`, {
      jobUpdate: update,
    })
    channels[`${type}Results`] = queueChannel(queue('results'), `Outcomes of ${type} jobs, to the backend.`, {
      [`${type}Result`]: result,
    })
    channels[`${type}Dead`] = {
      ...queueChannel(
        queue('dead'),
        `Messages of the ${type} queues RabbitMQ dead-lettered: refused as malformed, or over the delivery limit (${DELIVERY_LIMIT}). The backend reads them.`,
        {}
      ),
    }
    operations[`receive${Type}Request`] = operation(
      'receive',
      `${type}Request`,
      [`${type}Request`],
      `Take ${/^[aeiou]/.test(singular(type)) ? 'an' : 'a'} interactive ${singular(type)} job; acked once its result is confirmed.`,
      false,
      CLASS_PRIORITY.interactive
    )
    operations[`receive${Type}Bulk`] = operation(
      'receive',
      `${type}Bulk`,
      [`${type}Request`],
      `Take a bulk ${singular(type)} job when no interactive one waits and a slot other than the last is free; acked once its result is confirmed.`,
      false,
      CLASS_PRIORITY.bulk
    )
    operations[`send${Type}Update`] = operation(
      'send',
      `${type}Updates`,
      ['jobUpdate'],
      'Report progress: at most one update per job every 500 ms, the latest again every heartbeat, then the final one.',
      true
    )
    operations[`send${Type}Result`] = operation(
      'send',
      `${type}Results`,
      [`${type}Result`],
      'Report the outcome of a job, once per attempt that ends.',
      true
    )
  }
  const exchanges = topology(SYSTEM, 'images').exchanges
  const cancel = exchanges.find((e) => e.type === 'fanout')!
  const deadLetter = exchanges.find((e) => e.type === 'direct')!
  channels.cancel = {
    address: cancel.name,
    description:
      'A fanout: each processor instance binds an exclusive, auto-deleted queue of its own and hears every cancel.',
    parameters,
    messages: { cancel: message('cancel', 'cancel', 'job.cancel') },
    bindings: {
      amqp: {
        is: 'routingKey',
        exchange: { name: cancel.name, type: 'fanout', ...cancel.options, vhost: '/' },
        bindingVersion: BINDING_VERSION,
      },
    },
  }
  channels.deadLetter = {
    address: deadLetter.name,
    description: "Where every working queue dead-letters, routed by the `.dead` queue's name.",
    parameters,
    messages: {},
    bindings: {
      amqp: {
        is: 'routingKey',
        exchange: { name: deadLetter.name, type: 'direct', ...deadLetter.options, vhost: '/' },
        bindingVersion: BINDING_VERSION,
      },
    },
  }
  operations.receiveCancel = operation(
    'receive',
    'cancel',
    ['cancel'],
    'Stop the job if it runs here; published without `mandatory` (no processor may be listening).',
    false
  )

  return {
    asyncapi: '3.0.0',
    info: {
      title: 'Media pipeline protocol',
      version: '1.0.0',
      description:
        'What a backend and a media processor say to each other over RabbitMQ (shared/PROTOCOL.md is the prose). This document ' +
        `describes a processor; a backend does the opposite of each operation. Messages are UTF-8 JSON of at most ${MAX_MESSAGE_BYTES} bytes, ` +
        'published persistent to the default exchange (routed by queue name) with publisher confirms.',
    },
    defaultContentType: MESSAGE_CONTENT_TYPE,
    channels,
    operations,
    components: { messages },
  }
}

const singular = (type: MediaType) => MEDIA_KINDS[type]
