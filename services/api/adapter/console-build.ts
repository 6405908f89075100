/**
 * Builds the web console (`console/`) into the files `routes/console.ts` serves: its TypeScript bundled for browsers
 * by Bun's bundler (`Bun.build`, in memory), its page, styles and icon as they are. Built once, on first use, so an
 * API that never serves the console never pays for it. On a runtime without Bun's bundler (the API on Deno) the
 * console is unavailable, and says so. What only some pages need (the HLS player, hls.js: ~390 KB) is split into
 * chunks (`chunk-<hash>.js`) the page imports when it first needs them.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'

export interface ConsoleFile {
  body: Uint8Array
  /** The same, gzipped: what most browsers are sent (the script is 113 KB, 35 KB gzipped). */
  gzipped: Uint8Array
  type: string
  etag: string
}
export type ConsoleFiles = { files: Map<string, ConsoleFile> } | { unavailable: string }

/** The names the console's files may have: its page's own, and the bundler's chunks. */
export const CONSOLE_FILE_NAME = /^(?:app\.js|app\.css|icon\.svg|chunk-[a-z0-9]{1,32}\.js)$/

const DIR = join(import.meta.dir ?? new URL('.', import.meta.url).pathname, '..', 'console')
const STATIC: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
  'icon.svg': 'image/svg+xml',
}

/** The console's files, built on the first call; every later call gets the same build. */
export function consoleBuilder(): () => Promise<ConsoleFiles> {
  let built: Promise<ConsoleFiles> | undefined
  return () =>
    (built ??= build().catch((error) => {
      built = undefined // tried again on the next request
      throw error
    }))
}

async function build(): Promise<ConsoleFiles> {
  const bun = (globalThis as { Bun?: typeof Bun }).Bun
  if (!bun) return { unavailable: "the web console is built by Bun's bundler: run the API on Bun to serve it" }
  const result = await bun.build({
    entrypoints: [join(DIR, 'src/main.ts')],
    target: 'browser',
    minify: true,
    sourcemap: 'none',
    splitting: true,
    naming: { entry: 'app.[ext]', chunk: 'chunk-[hash].[ext]' },
  })
  // A build error is ours, not the caller's: it fails loudly (500, logged) rather than serving half a console.
  if (!result.success)
    throw new AggregateError(result.logs, `the console did not build: ${result.logs.map(String).join('; ')}`)
  const files = new Map<string, ConsoleFile>()
  const add = async (name: string, type: string, body: Uint8Array) =>
    files.set(name, { body, gzipped: bun.gzipSync(body as Uint8Array<ArrayBuffer>), type, etag: await etagOf(body) })
  for (const output of result.outputs) {
    const name = output.path.slice(output.path.lastIndexOf('/') + 1)
    await add(name, 'text/javascript; charset=utf-8', new Uint8Array(await output.arrayBuffer()))
  }
  for (const [name, type] of Object.entries(STATIC))
    await add(name, type, new Uint8Array(await readFile(join(DIR, name))))
  return { files }
}

async function etagOf(body: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', body as Uint8Array<ArrayBuffer>))
  return `"${Array.from(digest.slice(0, 12), (b) => b.toString(16).padStart(2, '0')).join('')}"`
}
