/**
 * The embedded S3-compatible store (npm `s3rver`) used when `S3_ENDPOINT` is not set, and by the tests.
 * It keeps objects on disk under `directory` and creates `bucket` on start. Not for production: it is a
 * single-process JavaScript server with no durability guarantees.
 *
 * As a program: `bun infra/s3-server.ts [--port N] [--dir PATH] [--bucket NAME]` prints one JSON line,
 * `{"endpoint": "...", "bucket": "..."}`, once it accepts connections.
 */
import { mkdirSync } from 'node:fs'
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
  const { port } = (await server.run()) as { port: number }
  return { endpoint: `http://127.0.0.1:${port}`, bucket: options.bucket, close: () => server.close() }
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: { port: { type: 'string', default: '0' }, dir: { type: 'string', default: './.data/s3' }, bucket: { type: 'string', default: 'media' } },
  })
  const s3 = await startS3Server({ port: Number(values.port), directory: values.dir!, bucket: values.bucket! })
  console.log(JSON.stringify({ endpoint: s3.endpoint, bucket: s3.bucket }))
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void s3.close().then(() => process.exit(0)))
}
