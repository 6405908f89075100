/** The environment a test gives to the services it starts: the real broker, the run's S3 server, a fresh namespace. */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LOCAL_S3_CREDENTIALS } from '../../infra/s3-server.ts'
import { RABBITMQ_URL, trackNamespace } from './infra.ts'
import { testLogFile } from './logs.ts'

export { RABBITMQ_URL }

/** A new namespace (`SYSTEM`), removed from the broker when the run ends. */
export function newSystem(): string {
  const system = `t${crypto.randomUUID().slice(0, 8)}`
  trackNamespace(system)
  return system
}

/** The API key every test API takes (through API_KEYS, tenant `test`), and the header that sends it. */
export const TEST_API_KEY = `mk_test_${crypto.randomUUID().replaceAll('-', '')}`
export const apiKey = { authorization: `Bearer ${TEST_API_KEY}` }

const dataDirs: string[] = []
/** Removes the data directories `testEnv` made (called once the run ends). */
export function removeDataDirs(): void {
  for (const dir of dataDirs.splice(0)) rmSync(dir, { recursive: true, force: true })
}

/**
 * Environment variables for a service under test; each call gets its own namespace and data directory, and the log
 * file of the running test file (tests/helpers/logs.ts). Needs the S3 server: `await useInfra()` at the top of the
 * test file.
 */
export function testEnv(overrides: Record<string, string> = {}): Record<string, string> {
  if (!process.env.TEST_S3_ENDPOINT)
    throw new Error(
      'testEnv() needs the test S3 server: call `await useInfra()` (tests/helpers/infra.ts) at the top of the test file'
    )
  const dataDir = mkdtempSync(join(tmpdir(), 'media-test-data-'))
  dataDirs.push(dataDir)
  return {
    SYSTEM: newSystem(),
    RABBITMQ_URL,
    S3_ENDPOINT: process.env.TEST_S3_ENDPOINT!,
    S3_BUCKET: process.env.TEST_S3_BUCKET!,
    S3_REGION: 'us-east-1',
    S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
    DATA_DIR: dataDir,
    API_KEYS: `test:${TEST_API_KEY}`,
    LOG_FILE: testLogFile(),
    ...overrides,
  }
}
