/**
 * The protocol's documents: the JSON Schemas and the AsyncAPI document in shared/ are exactly what the valibot
 * schemas generate today, the AsyncAPI document is valid AsyncAPI 3.0, and PROTOCOL.md states the numbers and
 * tables the code uses. Pure: no broker, no S3.
 */
import { describe, expect, test } from 'bun:test'
import { Parser } from '@asyncapi/parser'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  DELIVERY_LIMIT,
  ERROR_CODES,
  HEARTBEAT_SECONDS,
  MAX_ATTEMPTS,
  MAX_MESSAGE_BYTES,
  MEDIA_TYPES,
  OUTPUT_FORMATS,
  UPDATE_INTERVAL_MS,
  topology,
} from '@app/shared'
import { protocolDocuments } from '../../shared/spec/generate.ts'

const SHARED = join(import.meta.dir, '../../shared')
const read = (path: string) => readFileSync(join(SHARED, path), 'utf8')

describe('generated documents', () => {
  test('the JSON Schemas and the AsyncAPI document in shared/ are current (run `bun run protocol:generate` if not)', () => {
    const documents = protocolDocuments()
    expect([...documents.keys()].sort()).toEqual([
      'asyncapi.json',
      'schemas/audio-request.json',
      'schemas/audio-result.json',
      'schemas/cancel.json',
      'schemas/image-request.json',
      'schemas/image-result.json',
      'schemas/job-update.json',
      'schemas/video-request.json',
      'schemas/video-result.json',
    ])
    for (const [path, content] of documents) expect({ path, content: read(path) }).toEqual({ path, content })
  })

  test('the AsyncAPI document is valid AsyncAPI 3.0', async () => {
    const { diagnostics } = await new Parser().parse(read('asyncapi.json'))
    const errors = diagnostics.filter((d) => d.severity === 0).map((d) => `${d.path.join('.')}: ${d.message}`)
    expect(errors).toEqual([])
  })

  test('the AsyncAPI document carries every queue of the topology with its arguments', () => {
    const document = JSON.parse(read('asyncapi.json')) as {
      channels: Record<string, { address: string; 'x-queue-arguments'?: unknown }>
    }
    for (const type of MEDIA_TYPES) {
      for (const queue of topology('{system}', type).queues) {
        const channel = Object.values(document.channels).find((c) => c.address === queue.name)
        expect({ queue: queue.name, arguments: channel?.['x-queue-arguments'] }).toEqual({
          queue: queue.name,
          arguments: queue.options.arguments,
        })
      }
    }
  })
})

describe('PROTOCOL.md', () => {
  const page = read('PROTOCOL.md')
  const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  /** The table rows (of the cells given, in order, the last one possibly followed by more text) that the page lacks. */
  const missingRows = (rows: string[][]) =>
    rows
      .filter((cells) => !new RegExp(`^\\|\\s*${cells.map(escape).join('\\s*\\|\\s*')}[^|]*\\|`, 'm').test(page))
      .map((cells) => cells.join(' | '))

  test('lists every error code with its class', () => {
    expect(missingRows(Object.entries(ERROR_CODES).map(([code, { class: klass }]) => [`\`${code}\``, klass]))).toEqual(
      []
    )
  })

  test('gives each output format its extension and content type', () => {
    const rows = Object.entries(OUTPUT_FORMATS).map(([format, { extension, contentType }]) => [
      format === 'mp4' ? 'video renditions' : `\`${format}\``,
      `\`${extension}\``,
      `\`${contentType}\``,
    ])
    // The first cell may say more ("`webp` (images, video posters)").
    const loose = rows.map(([first, ...rest]) => [`${first}[^|]*`, ...rest])
    expect(
      loose.filter(
        (cells) => !new RegExp(`^\\| ${cells[0]}\\| ${cells.slice(1).map(escape).join(' \\| ')} \\|`, 'm').test(page)
      )
    ).toEqual([])
  })

  test('states the queue arguments and the limits the code uses', () => {
    const working = topology('<system>', 'images').queues[0]!.options.arguments
    const shown = (value: string | number) => `\`${JSON.stringify(value).replace('.images.', '.<type>.')}\``
    expect(missingRows(Object.entries(working).map(([name, value]) => [`\`${name}\``, shown(value)]))).toEqual([])
    expect(working['x-delivery-limit']).toBe(DELIVERY_LIMIT)
    for (const phrase of [
      `deliver one message at most **${DELIVERY_LIMIT + 1}** times`,
      `at most **${MAX_ATTEMPTS} attempts**`,
      `at most **${MAX_MESSAGE_BYTES} bytes**`,
      `one update per job every ${UPDATE_INTERVAL_MS} ms`,
      `every **${HEARTBEAT_SECONDS} s**`,
    ]) {
      expect({ phrase, found: page.includes(phrase) }).toEqual({ phrase, found: true })
    }
  })
})
