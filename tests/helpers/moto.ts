/**
 * moto's S3 server (`moto_server`, installed with pip), as a second S3 implementation: what the embedded store lets
 * pass, a different server may not. Started per test file that asks, on a free port, with one bucket; stopped by `stop`.
 */
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3'
import { freePort } from './ports.ts'

export interface Moto {
  endpoint: string
  /** S3_* for services and `testS3`, pointing at this server. */
  env: Record<string, string>
  /** The server's process id (the benchmarks read its CPU time). */
  pid: number
  stop(): Promise<void>
}

const CREDENTIALS = { accessKeyId: 'moto', secretAccessKey: 'moto-secret' }

export async function startMoto(bucket = 'media-test'): Promise<Moto> {
  if (!Bun.which('moto_server'))
    throw new Error('moto_server is not installed: `pip install "moto[server]"` (the machine image has it)')
  const port = freePort()
  const endpoint = `http://127.0.0.1:${port}`
  const server = Bun.spawn(['moto_server', '-H', '127.0.0.1', '-p', String(port)], { stdout: 'ignore', stderr: 'pipe' })
  let log = ''
  void (async () => {
    const reader = server.stderr.getReader()
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read())
      log = (log + new TextDecoder().decode(chunk.value)).slice(-4000)
  })()
  const stop = async () => {
    server.kill()
    await server.exited
  }
  const deadline = Date.now() + 20_000
  for (;;) {
    const up = await fetch(endpoint, { signal: AbortSignal.timeout(1_000) }).then(
      (r) => r.ok,
      () => false
    )
    if (up) break
    if (server.exitCode !== null || Date.now() > deadline) {
      await stop()
      throw new Error(`moto_server did not start on ${endpoint} within 20 s:\n${log}`)
    }
    await Bun.sleep(100)
  }
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: CREDENTIALS })
  await client.send(new CreateBucketCommand({ Bucket: bucket }))
  client.destroy()
  return {
    endpoint,
    env: {
      S3_ENDPOINT: endpoint,
      S3_BUCKET: bucket,
      S3_REGION: 'us-east-1',
      S3_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
      S3_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
    },
    pid: server.pid,
    stop,
  }
}
