/**
 * The embedded S3-compatible store (npm `s3rver`) used when `S3_ENDPOINT` is not set, and by the tests.
 * It keeps objects on disk under `directory` and creates `bucket` on start. Not for production: it is a
 * single-process JavaScript server with no durability guarantees.
 *
 * As a program: `bun infra/s3-server.ts [--port N] [--dir PATH] [--bucket NAME]` prints one JSON line,
 * `{"endpoint": "...", "bucket": "..."}`, once it accepts connections.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import S3rver from 's3rver'

/** s3rver accepts only these credentials. */
export const LOCAL_S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const

export interface LocalS3 {
  endpoint: string
  bucket: string
  close(): Promise<void>
}

export async function startS3Server(options: { port: number; directory: string; bucket: string }): Promise<LocalS3> {
  mkdirSync(options.directory, { recursive: true })
  const server = new S3rver({
    address: '127.0.0.1',
    port: options.port,
    directory: options.directory,
    silent: true,
    configureBuckets: [{ name: options.bucket, configs: [] }],
  })
  answerBeforeS3rver(server, options.directory)
  const { port } = (await server.run()) as { port: number }
  return { endpoint: `http://127.0.0.1:${port}`, bucket: options.bucket, close: () => server.close() }
}

/**
 * Calls answered before s3rver. It implements neither ListMultipartUploads nor AbortMultipartUpload, so uploads
 * abandoned mid-way would keep their parts on disk forever and no sweeper could see them. This adds both, over
 * s3rver's own layout: each upload is a directory `<dir>/<bucket>/._S3rver_uploads/<uploadId>/` holding a `key` file
 * and the parts. And it answers HeadBucket itself (see below). (Like the rest of this store, for one machine: these
 * calls do not check the request signature.)
 */
function answerBeforeS3rver(server: S3rver, directory: string): void {
  type Context = {
    method: string
    path: string
    headers: Record<string, string | undefined>
    query: Record<string, string | undefined>
    status: number
    body: unknown
    type: string
  }
  const uploadsDir = (bucket: string) => join(directory, bucket, '._S3rver_uploads')
  const xml = (text: string) => text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`)
  const middleware = async (ctx: Context, next: () => Promise<unknown>) => {
    const [bucket, ...rest] = ctx.path.slice(1).split('/')
    const key = rest.map(decodeURIComponent).join('/')
    if (ctx.method === 'GET' && bucket && !key && 'uploads' in ctx.query) {
      const prefix = ctx.query.prefix ?? ''
      const uploads = existsSync(uploadsDir(bucket))
        ? readdirSync(uploadsDir(bucket)).flatMap((id) => {
            const file = join(uploadsDir(bucket), id, 'key')
            if (!existsSync(file)) return []
            const uploadKey = readFileSync(file, 'utf8')
            return uploadKey.startsWith(prefix)
              ? [{ id, key: uploadKey, initiated: statSync(file).mtime.toISOString() }]
              : []
          })
        : []
      ctx.type = 'application/xml'
      ctx.body =
        '<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
        `<Bucket>${xml(bucket)}</Bucket><Prefix>${xml(prefix)}</Prefix><MaxUploads>10000</MaxUploads><IsTruncated>false</IsTruncated>` +
        uploads
          .map(
            (u) =>
              `<Upload><Key>${xml(u.key)}</Key><UploadId>${u.id}</UploadId><Initiated>${u.initiated}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`
          )
          .join('') +
        '</ListMultipartUploadsResult>'
      return
    }
    // HeadBucket (the API's readiness check, at every scrape of its metrics): s3rver answers it with its GET
    // route, a ListObjects that stats every object in the bucket and is then thrown away: its cost grew with the
    // store (issue 13's figure 4 spent most of this process's CPU there). Whether the bucket exists is the answer.
    // A request from another key goes on to s3rver, which refuses it as S3 would.
    const fromOurKey = ctx.headers.authorization?.includes(`Credential=${LOCAL_S3_CREDENTIALS.accessKeyId}/`)
    if (ctx.method === 'HEAD' && bucket && !key && Object.keys(ctx.query).length === 0 && fromOurKey) {
      ctx.status = existsSync(join(directory, bucket)) ? 200 : 404
      return
    }
    if (ctx.method === 'DELETE' && bucket && key && ctx.query.uploadId) {
      const dir = join(uploadsDir(bucket), ctx.query.uploadId.replace(/[^0-9a-f]/g, ''))
      if (!existsSync(join(dir, 'key')) || readFileSync(join(dir, 'key'), 'utf8') !== key) {
        ctx.status = 404
        ctx.type = 'application/xml'
        ctx.body =
          '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>'
        return
      }
      rmSync(dir, { recursive: true, force: true })
      ctx.status = 204
      return
    }
    return next()
  }
  ;(server as unknown as { middleware: unknown[] }).middleware.unshift(middleware)
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      dir: { type: 'string', default: './.data/s3' },
      bucket: { type: 'string', default: 'media' },
    },
  })
  const s3 = await startS3Server({ port: Number(values.port), directory: values.dir!, bucket: values.bucket! })
  console.log(JSON.stringify({ endpoint: s3.endpoint, bucket: s3.bucket }))
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => void s3.close().then(() => process.exit(0)))
}
