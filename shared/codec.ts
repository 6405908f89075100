/** JSON bytes in and out of queues, validated in both directions so a producer's bug fails in the producer. */
import * as v from 'valibot'

export const MESSAGE_CONTENT_TYPE = 'application/json'
/** A message larger than this is refused before JSON.parse; no message of the protocol comes near it. */
export const MAX_MESSAGE_BYTES = 256 * 1024

/** Validates `value` against `schema` and encodes it as UTF-8 JSON; throws if it does not match. */
export function encodeMessage<S extends v.GenericSchema>(schema: S, value: v.InferInput<S>): Uint8Array {
  const result = v.safeParse(schema, value)
  if (!result.success) throw new Error(`refusing to send an invalid message: ${v.summarize(result.issues)}`)
  return new TextEncoder().encode(JSON.stringify(result.output))
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string }

/** Decodes and validates a message; never throws, and a failure's `reason` says what is wrong. */
export function decodeMessage<S extends v.GenericSchema>(schema: S, bytes: Uint8Array): Decoded<v.InferOutput<S>> {
  if (bytes.byteLength > MAX_MESSAGE_BYTES)
    return { ok: false, reason: `message is ${bytes.byteLength} bytes, over ${MAX_MESSAGE_BYTES}` }
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (error) {
    return { ok: false, reason: `message is not UTF-8 JSON: ${(error as Error).message}` }
  }
  if (typeof json === 'object' && json !== null && 'version' in json && json.version !== 1) {
    return { ok: false, reason: `unknown message version ${JSON.stringify(json.version)}; this side speaks version 1` }
  }
  const result = v.safeParse(schema, json)
  if (!result.success)
    return {
      ok: false,
      reason: `message does not match the schema: ${v.summarize(result.issues).replace(/\n\s*/g, ' ')}`,
    }
  return { ok: true, value: result.output }
}
