/**
 * The embedded S3-compatible store, used when `S3_ENDPOINT` is not set (`bun run start`) and by the tests: our own
 * small server on Bun.serve (infra/store/). The single-machine default only, not for production: one process, one
 * key pair, no replication, and no fsync (an object survives a crash of this process, not necessarily a power loss).
 *
 * It implements what the system calls: Put/Get (one Range)/Head/Delete/Copy object, DeleteObjects, ListObjectsV2
 * and ListObjects, Head/Create/Delete bucket, ListBuckets, and multipart uploads with ListParts and
 * ListMultipartUploads; AWS SigV4, header-signed and presigned (query-signed), for the one key pair; CORS for any
 * origin, so browsers can use presigned URLs. Objects are files under `directory` (see store/objects.ts), written
 * to a temporary file and renamed into place. It does not implement versioning, ACLs and policies, tagging,
 * lifecycle rules, object lock, encryption, checksums other than Content-MD5 and the signed SHA-256, aws-chunked
 * (STREAMING-*) bodies, UploadPartCopy, browser form POSTs, virtual-hosted-style addressing: those answer
 * NotImplemented (501) naming the operation, or are ignored where S3 would only add a header.
 *
 * As a program: `bun infra/s3-server.ts [--port N] [--dir PATH] [--bucket NAME]` prints one JSON line,
 * `{"endpoint": "...", "bucket": "..."}`, once it accepts connections.
 */
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Layout, ReadPins } from './store/objects.ts'
import { moveS3rverData } from './store/s3rver-data.ts'
import { startStore } from './store/server.ts'

/** The one key pair the store accepts. (The names are historical: the store used to be npm `s3rver`.) */
export const LOCAL_S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const

export interface LocalS3 {
  endpoint: string
  bucket: string
  close(): Promise<void>
}

/** Starts the store on 127.0.0.1:`port` (0: any free port) over `directory`, with `bucket` made if missing. */
export async function startS3Server(options: { port: number; directory: string; bucket: string }): Promise<LocalS3> {
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(options.bucket))
    throw new Error(`the bucket name ${JSON.stringify(options.bucket)} is not valid for S3 (3-63 of a-z 0-9 . -)`)
  // A directory this store has not opened before (it makes `.store` there) may hold an earlier release's objects.
  if (existsSync(options.directory) && !existsSync(join(options.directory, '.store'))) {
    const layout = new Layout(options.directory)
    mkdirSync(layout.tmp, { recursive: true })
    const moved = await moveS3rverData(layout, new ReadPins())
    if (moved) console.error(`s3 store: moved ${moved} object(s) an earlier release (s3rver) stored into this store`)
  }
  const store = startStore({
    directory: options.directory,
    port: options.port,
    hostname: '127.0.0.1',
    credentials: LOCAL_S3_CREDENTIALS,
  })
  mkdirSync(join(options.directory, options.bucket), { recursive: true })
  return { endpoint: `http://127.0.0.1:${store.port}`, bucket: options.bucket, close: () => store.close() }
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
