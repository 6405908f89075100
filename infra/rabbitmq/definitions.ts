/**
 * RabbitMQ definitions (the JSON of `rabbitmqctl import_definitions`, `rabbitmqadmin import` and `load_definitions`)
 * for one namespace, made from `topology()` in shared/topology.ts: the exchanges, queues (with their exact
 * arguments) and bindings every service declares at start. Made, not written by hand, so an operator who imports
 * them before the services run gets exactly what the services will re-declare; RabbitMQ refuses a re-declaration
 * with other arguments (PRECONDITION_FAILED), so a drifted file would stop every service.
 *
 * `bun infra/rabbitmq/definitions.ts` writes infra/rabbitmq/definitions.json for SYSTEM=media (tests/deploy.test.ts
 * checks it is current). `--system <name>` and `--out <file>` make another namespace's.
 *
 * Users are left out of the committed file on purpose: a password hash in the repository would be everybody's
 * password. Compose seeds its user with RABBITMQ_DEFAULT_USER/PASS and imports this file afterwards (see
 * infra/compose.yaml); `definitionsFor(system, { users })` exists for operators who want one file with a user.
 */
import { createHash, randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { MEDIA_TYPES, topology, type ExchangeSpec, type QueueSpec } from '@app/shared'

export interface DefinitionsUser {
  name: string
  password: string
  /** `administrator` lets the user into the management UI; services need none. */
  tags?: string[]
  /** 4 bytes; random unless given (tests give one to get a stable hash). */
  salt?: Uint8Array
}

export interface DefinitionsOptions {
  /** Default `/`. */
  vhost?: string
  /** Each gets full permissions on the vhost. */
  users?: DefinitionsUser[]
}

/** The definitions of every media type's topology in `system`, as one import. */
export function definitionsFor(system: string, options: DefinitionsOptions = {}) {
  const vhost = options.vhost ?? '/'
  const exchanges = new Map<string, ExchangeSpec>()
  const queues = new Map<string, QueueSpec>()
  const bindings: { source: string; destination: string; routing_key: string }[] = []
  for (const type of MEDIA_TYPES) {
    const spec = topology(system, type)
    // The dead-letter and cancel exchanges are the namespace's, so every type lists them: keep one of each.
    for (const e of spec.exchanges) exchanges.set(e.name, e)
    for (const q of spec.queues) queues.set(q.name, q)
    for (const b of spec.bindings)
      bindings.push({ source: b.exchange, destination: b.queue, routing_key: b.routingKey })
  }
  const users = options.users ?? []
  return {
    users: users.map((u) => ({
      name: u.name,
      password_hash: passwordHash(u.password, u.salt),
      hashing_algorithm: 'rabbit_password_hashing_sha256',
      // A comma-separated string: what RabbitMQ 3.8 to 3.13 all read (3.9+ also take an array).
      tags: (u.tags ?? []).join(','),
    })),
    vhosts: [{ name: vhost }],
    permissions: users.map((u) => ({ user: u.name, vhost, configure: '.*', write: '.*', read: '.*' })),
    exchanges: [...exchanges.values()].map((e) => ({
      name: e.name,
      vhost,
      type: e.type,
      durable: e.options.durable,
      auto_delete: e.options.autoDelete,
      internal: false,
      arguments: {},
    })),
    queues: [...queues.values()].map((q) => ({
      name: q.name,
      vhost,
      durable: q.options.durable,
      auto_delete: false,
      // Everything (the quorum type included) is in the arguments, exactly as amqplib's assertQueue sends them.
      arguments: q.options.arguments,
    })),
    bindings: bindings.map((b) => ({ ...b, vhost, destination_type: 'queue', arguments: {} })),
  }
}

/**
 * RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ‖ sha256(salt ‖ utf8(password))) with a 4-byte salt.
 * @see https://www.rabbitmq.com/docs/passwords#computing-password-hash
 */
export function passwordHash(password: string, salt: Uint8Array = randomBytes(4)): string {
  if (salt.length !== 4) throw new Error('the salt must be 4 bytes')
  const digest = createHash('sha256').update(salt).update(password, 'utf8').digest()
  return Buffer.concat([salt, digest]).toString('base64')
}

/** The committed file and what it holds. */
export const DEFINITIONS_FILE = join(import.meta.dir, 'definitions.json')
export const COMPOSE_SYSTEM = 'media'

/** The file's text: stable key order, two-space indent, a final newline (so regenerating gives the same bytes). */
export function definitionsJson(definitions: ReturnType<typeof definitionsFor>): string {
  return JSON.stringify(definitions, null, 2) + '\n'
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      system: { type: 'string', default: COMPOSE_SYSTEM },
      out: { type: 'string', default: DEFINITIONS_FILE },
    },
  })
  writeFileSync(values.out, definitionsJson(definitionsFor(values.system)))
  console.log(`definitions: wrote ${values.out} for SYSTEM=${values.system}`)
}
