/**
 * Writes the protocol's machine-readable documents: `shared/schemas/<message>.json` and `shared/asyncapi.json`.
 * Run `bun run protocol:generate` after changing a message; a test regenerates them and fails on any difference.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { asyncApiDocument } from './asyncapi.ts'
import { MESSAGE_DOCS, toMessageJsonSchema } from './json-schemas.ts'

const SHARED = join(import.meta.dirname, '..')

/** Every generated file: its path under shared/ and its exact content. */
export function protocolDocuments(): Map<string, string> {
  const files = new Map<string, string>()
  const schemas = Object.fromEntries(MESSAGE_DOCS.map((doc) => [doc.file, toMessageJsonSchema(doc)]))
  for (const [file, schema] of Object.entries(schemas)) files.set(`schemas/${file}.json`, json(schema))
  files.set('asyncapi.json', json(asyncApiDocument(schemas)))
  return files
}

const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`

if (import.meta.main) {
  for (const [path, content] of protocolDocuments()) {
    mkdirSync(dirname(join(SHARED, path)), { recursive: true })
    writeFileSync(join(SHARED, path), content)
    console.log(`wrote shared/${path}`)
  }
}
