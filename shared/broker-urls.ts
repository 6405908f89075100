/**
 * A broker given as several URLs: RABBITMQ_URL may list the nodes of a RabbitMQ cluster, comma-separated, and a
 * service moves to the next node whenever a connection attempt fails or a connection is lost.
 *
 * amqplib's built-in recovery re-opens the address it was first given. Given an object rather than a string, it reads
 * that object's fields again on every attempt (lib/connect.js), so `connectInTurn` hands it one object and points it
 * at the next URL after every failed attempt (`connect-failed`) and every lost connection (`disconnect`): recovery,
 * its backoff and its `setup` stay amqplib's. Structural types only: this package imports no client library.
 */

/** The broker address amqplib's `connect` takes instead of a URL string (its `Options.Connect`). */
export interface BrokerAddress {
  /** Without the colon, as lib/connect.js expects of an object. */
  protocol: 'amqp' | 'amqps'
  hostname: string
  /** Absent: 5672 for amqp, 5671 for amqps. */
  port: number | undefined
  /** Both absent: guest/guest, as for a URL without credentials. */
  username: string | undefined
  password: string | undefined
  /** Still percent-encoded, as in the URL (amqplib decodes it); absent: `/`. */
  vhost: string | undefined
  /** The URL's query parameters amqplib reads (`?heartbeat=10`). */
  heartbeat: number | undefined
  frameMax: number | undefined
  channelMax: number | undefined
  maxFrameSize: number | undefined
  locale: string | undefined
}

export type BrokerUrls = { ok: true; urls: string[] } | { ok: false; reason: string }

/**
 * Splits a RABBITMQ_URL value into its URLs and checks each (amqp:// or amqps:// with a host, each node once).
 * The reason names the bad entry by position, never by its text: a URL may hold a password. A comma inside a URL
 * (in a password, say) must be written `%2C`.
 */
export function parseBrokerUrls(value: string): BrokerUrls {
  const entries = value.split(',').map((entry) => entry.trim())
  const which = (i: number) => (entries.length === 1 ? 'must be' : `entry ${i + 1} of ${entries.length} must be`)
  const seen = new Map<string, number>()
  for (const [i, entry] of entries.entries()) {
    if (!entry)
      return {
        ok: false,
        reason:
          entries.length === 1
            ? 'must be a URL such as amqp://user:password@host:5672'
            : `entry ${i + 1} of ${entries.length} is empty`,
      }
    if (!URL.canParse(entry)) return { ok: false, reason: `${which(i)} a URL such as amqp://user:password@host:5672` }
    const url = new URL(entry)
    if (url.protocol !== 'amqp:' && url.protocol !== 'amqps:')
      return { ok: false, reason: `${which(i)} an amqp:// or amqps:// URL` }
    if (!url.hostname) return { ok: false, reason: `${which(i)} a URL with a host` }
    const node = `${url.protocol}//${url.host}${url.pathname}`
    const earlier = seen.get(node)
    if (earlier !== undefined)
      return { ok: false, reason: `entry ${i + 1} of ${entries.length} names the same broker as entry ${earlier + 1}` }
    seen.set(node, i)
  }
  return { ok: true, urls: entries }
}

/** A URL without its credentials, for logs and errors. */
export function redactBrokerUrl(url: string): string {
  if (!URL.canParse(url)) return '(not a URL)'
  const parsed = new URL(url)
  parsed.username = ''
  parsed.password = ''
  return parsed.toString()
}

/** Every URL of a list without credentials, comma-separated: what logs and errors show of RABBITMQ_URL. */
export const describeBrokerUrls = (urls: readonly string[]): string => urls.map(redactBrokerUrl).join(', ')

/** A URL as the object amqplib's `connect` takes, read the way amqplib reads a URL string. */
export function brokerAddress(url: string): BrokerAddress {
  const parsed = new URL(url)
  const query = parsed.searchParams
  const int = (name: string) => (query.has(name) ? Number.parseInt(query.get(name)!, 10) : undefined)
  const credentials = parsed.username !== '' || parsed.password !== ''
  return {
    protocol: parsed.protocol === 'amqps:' ? 'amqps' : 'amqp',
    hostname: parsed.hostname.replace(/^\[|\]$/g, ''),
    port: parsed.port ? Number(parsed.port) : undefined,
    username: credentials ? decode(parsed.username) : undefined,
    password: credentials ? decode(parsed.password) : undefined,
    vhost: parsed.pathname.slice(1) || undefined,
    heartbeat: int('heartbeat'),
    frameMax: int('frameMax'),
    channelMax: int('channelMax'),
    maxFrameSize: int('maxFrameSize'),
    locale: query.get('locale') ?? undefined,
  }
}

/** Percent-decoding as amqplib does for a URL string's credentials; a malformed escape stays as written. */
function decode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

/** The part of amqplib's recovering connection that `connectInTurn` needs. */
export interface RecoveringConnectionLike {
  on(event: 'connect-failed' | 'disconnect', listener: (error: Error) => void): unknown
  waitForConnect(): Promise<unknown>
}

/** The options `connectInTurn` passes through, with the recovery settings it adjusts. */
export interface InTurnOptions {
  recovery: { initialMaxRetries?: number; waitForConnect?: boolean }
}

/**
 * Connects through amqplib's recovery to the brokers of `urls` in turn, starting at `first` (by default a random
 * one, which spreads a fleet's connections, and the quorum queue leaders they declare, over the nodes). Each failed
 * attempt and each lost connection moves to the next URL, so recovery reaches a surviving node. At startup every URL
 * is tried at least once before `initialMaxRetries` gives up.
 *
 * @example
 * const { connection, current } = await connectInTurn((address, options) => amqp.connect(address, options), urls, {
 *   recovery: { initialMaxRetries: 2, setup: async (model) => { … } },
 * })
 */
export async function connectInTurn<O extends InTurnOptions, C extends RecoveringConnectionLike>(
  connect: (address: BrokerAddress, options: O) => Promise<C>,
  urls: readonly string[],
  options: O,
  first = Math.floor(Math.random() * urls.length)
): Promise<{ connection: C /** The node connected to, or tried next (without credentials). */; current(): string }> {
  if (urls.length === 0) throw new Error('no broker URL given')
  const addresses = urls.map(brokerAddress)
  let at = first % urls.length
  // One object, re-pointed in place: amqplib keeps the reference and reads its fields on each attempt.
  const address: BrokerAddress = { ...addresses[at]! }
  const next = () => {
    at = (at + 1) % urls.length
    Object.assign(address, addresses[at])
  }
  const { initialMaxRetries } = options.recovery
  const recovery = {
    ...options.recovery,
    // Unset, amqplib retries as long as `maxRetries` allows: no less than every URL once.
    initialMaxRetries: initialMaxRetries === undefined ? undefined : Math.max(initialMaxRetries, urls.length - 1),
    // Resolve at once, so the listeners below are on before the first attempt (amqplib defers it to setImmediate).
    waitForConnect: false,
  }
  const connection = await connect(address, { ...options, recovery })
  connection.on('connect-failed', next)
  connection.on('disconnect', next)
  await connection.waitForConnect()
  return { connection, current: () => redactBrokerUrl(urls[at]!) }
}
