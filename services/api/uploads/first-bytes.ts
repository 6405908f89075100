/**
 * An upload's first bytes, read off its stream to judge what it is before anything is stored (a POST body, a tus
 * request), and the stream given back whole. The one reader of first bytes; direct uploads, already in S3, are
 * read with a ranged GET instead (s3/objects.ts `readHead`).
 */
import { SNIFF_BYTES } from './sniff.ts'

/**
 * Reads chunks until SNIFF_BYTES have arrived or the stream ends: the bytes read (`head`, possibly more than
 * SNIFF_BYTES: whole chunks), and whether the stream ended. The reader stays open for the rest.
 */
export async function readHead(
  reader: ReadableStreamDefaultReader<Uint8Array>
): Promise<{ head: Uint8Array; ended: boolean }> {
  const chunks: Uint8Array[] = []
  let total = 0
  let ended = false
  while (total < SNIFF_BYTES) {
    const next = await reader.read()
    if (next.done) {
      ended = true
      break
    }
    chunks.push(next.value)
    total += next.value.byteLength
  }
  return { head: concat(chunks, total), ended }
}

/** `head`, then the rest of `reader` (nothing more when it has ended). */
export function withHead(
  head: Uint8Array,
  reader: ReadableStreamDefaultReader<Uint8Array> | null
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (head.byteLength) controller.enqueue(head)
      if (!reader) controller.close()
    },
    async pull(controller) {
      const next = await reader!.read()
      if (next.done) controller.close()
      else controller.enqueue(next.value)
    },
    cancel: (reason) => reader?.cancel(reason),
  })
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!
  const out = new Uint8Array(total)
  let at = 0
  for (const chunk of chunks) {
    out.set(chunk, at)
    at += chunk.byteLength
  }
  return out
}
