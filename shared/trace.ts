/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` that follows one upload from its HTTP
 * request, through the AMQP headers of its request, into the processor and back with its updates and results, so
 * that every log line of the upload carries one trace id. Web Crypto only, so it runs on Bun, Deno and Node.
 *
 *   traceparent: 00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>
 */

export interface TraceContext {
  /** 32 lowercase hex digits, not all zero: the whole upload's id. */
  traceId: string
  /** 16 lowercase hex digits, not all zero: the span that sent this context. */
  spanId: string
  /** Bit 0: sampled. */
  flags: number
}

/** The header (and AMQP header) name. */
export const TRACEPARENT = 'traceparent'

const TRACEPARENT_FORMAT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/

/**
 * Reads a `traceparent` value, or null when it is absent or malformed (a malformed one is ignored, as the
 * specification asks: the receiver starts a new trace). Version `ff` is invalid; a later version is read by its
 * first four fields.
 */
export function parseTraceparent(value: unknown): TraceContext | null {
  if (typeof value !== 'string') return null
  const match = TRACEPARENT_FORMAT.exec(value.trim())
  if (!match) return null
  const [, version, traceId, spanId, flags, rest] = match as unknown as [
    string,
    string,
    string,
    string,
    string,
    string | undefined,
  ]
  if (version === 'ff' || (version === '00' && rest !== undefined)) return null
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return null
  return { traceId, spanId, flags: Number.parseInt(flags, 16) }
}

/** The `traceparent` value of a context. */
export function formatTraceparent(context: TraceContext): string {
  return `00-${context.traceId}-${context.spanId}-${(context.flags & 0xff).toString(16).padStart(2, '0')}`
}

/**
 * The context of a new span: a child of `parent` (same trace, new span id), or the root of a new trace when there is
 * none. New traces are sampled (flag 1), so a tracing backend, if one is configured, records them.
 */
export function childSpan(parent: TraceContext | null): TraceContext {
  return { traceId: parent?.traceId ?? randomHex(16), spanId: randomHex(8), flags: parent?.flags ?? 1 }
}

function randomHex(bytes: number): string {
  for (;;) {
    const hex = Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, '0')).join(
      ''
    )
    if (!/^0+$/.test(hex)) return hex // all zero is invalid (one chance in 2^64 or more)
  }
}
