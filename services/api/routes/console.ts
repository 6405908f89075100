/**
 * The web console: its page at `/` and its files at `/console/<file>`, served by the API itself (no server of its
 * own to run). They are built by Bun's bundler from `console/` on the first request and kept in memory (console-build.ts).
 * The page may run its own script and nothing else: a strict Content-Security-Policy of its own, set in app.ts.
 */
import { Hono } from 'hono'
import * as v from 'valibot'
import { CONSOLE_FILE_NAME, type ConsoleFiles } from '../adapter/console-build.ts'
import { ApiError } from '../http/errors.ts'
import { OPEN, documenter } from '../http/openapi.ts'
import { param } from '../http/validate.ts'

const FileParams = v.object({ file: v.pipe(v.string(), v.regex(CONSOLE_FILE_NAME)) })
const doc = documenter({ tag: 'console', security: OPEN, errors: [] })

export function consoleRoutes(files: () => Promise<ConsoleFiles>) {
  const serve = async (name: string, request: { header(name: string): string | undefined }) => {
    const built = await files()
    if ('unavailable' in built) throw new ApiError(404, 'not_found', built.unavailable)
    const file = built.files.get(name)
    if (!file) throw new ApiError(404, 'not_found', `the console has no file ${name}`)
    // Revalidated on each load (names carry no hash), answered 304 while unchanged.
    const headers = { 'Content-Type': file.type, 'Cache-Control': 'no-cache', ETag: file.etag, Vary: 'Accept-Encoding' }
    if (request.header('if-none-match') === file.etag) return new Response(null, { status: 304, headers })
    if (/\bgzip\b/.test(request.header('accept-encoding') ?? '')) {
      return new Response(file.gzipped as Uint8Array<ArrayBuffer>, {
        headers: { ...headers, 'Content-Encoding': 'gzip' },
      })
    }
    return new Response(file.body as Uint8Array<ArrayBuffer>, { headers })
  }
  return new Hono()
    .get('/', pageDoc, (c) => serve('index.html', c.req))
    .get('/console/:file', fileDoc, param(FileParams, 404), (c) => serve(c.req.valid('param').file, c.req))
}

/** The console's pages: its own script, styles and images (outputs as blob: URLs), nothing from anywhere else. */
/**
 * The console's policy. `mediaOrigins`: where else its player may fetch video and pictures from (the store's origin,
 * when the store serves segments and sprites through presigned URLs).
 */
export function consoleCsp(mediaOrigins: readonly string[] = []) {
  return {
    defaultSrc: ["'none'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'"],
    // data: for the ThumbHash placeholders the page draws (console/src/placeholder.ts).
    imgSrc: ["'self'", 'blob:', 'data:', ...mediaOrigins],
    // blob: for hls.js, which plays through a MediaSource object URL.
    mediaSrc: ["'self'", 'blob:', ...mediaOrigins],
    connectSrc: ["'self'", ...mediaOrigins],
    manifestSrc: ["'none'"],
    baseUri: ["'none'"],
    formAction: ["'none'"],
    frameAncestors: ["'none'"],
  }
}

export const isConsolePath = (path: string) => path === '/' || path.startsWith('/console/')

const pageDoc = doc({
  operationId: 'console',
  summary: 'The web console (HTML)',
  description:
    'Sign in with an API key to upload, follow and inspect media; with ADMIN_TOKEN, the operator views. Served on Bun; an API on Deno answers 404.',
  responses: { 200: { description: 'The page.', content: { 'text/html': { schema: { type: 'string' } } } } },
  errors: [404],
})
const fileDoc = doc({
  operationId: 'consoleFile',
  summary: 'A file of the web console: its script, styles or icon',
  responses: {
    200: {
      description: 'The file.',
      content: Object.fromEntries(
        ['text/javascript', 'text/css', 'image/svg+xml'].map((type) => [type, { schema: { type: 'string' } }])
      ),
    },
    304: { description: 'Unchanged since the ETag given in If-None-Match.' },
  },
  errors: [404],
})
