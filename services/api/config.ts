/** The API's configuration, read once from the environment at start. */
import { join, resolve } from 'node:path'
import * as v from 'valibot'
import { BrokerEnv, S3BucketEnv, S3Env, bytesVar, countVar, readEnv } from '@app/shared'

const DatabaseUrl = v.optional(
  v.pipe(
    v.string(),
    v.check((s) => !/^postgres(ql)?:/.test(s), 'PostgreSQL is not supported yet; unset it to use the embedded SQLite file'),
    v.check((s) => s === ':memory:' || s.startsWith('sqlite:') || s.startsWith('file:') || !s.includes('://'), 'must be a SQLite path or sqlite:<path>')
  )
)

const ConfigSchema = v.pipe(
  v.object({
    ...BrokerEnv,
    ...S3Env,
    ...S3BucketEnv,
    PORT: countVar(3000, 65535),
    DATABASE_URL: DatabaseUrl,
    DATA_DIR: v.optional(v.pipe(v.string(), v.nonEmpty()), './.data'),
    MAX_UPLOAD_BYTES: bytesVar('2G'),
    // A processing job silent this long is stalled (processors send a heartbeat every 15 s).
    STALL_SECONDS: countVar(120, 86400),
    MAX_REDRIVES: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number), v.maxValue(100)), '3'),
    // Multipart uploads left unfinished this long (a process killed mid-upload) are aborted by the sweeper.
    MULTIPART_MAX_AGE_HOURS: countVar(24, 24 * 365),
    ADMIN_TOKEN: v.optional(v.pipe(v.string(), v.minLength(16, 'must be at least 16 characters'))),
  }),
  v.transform((env) => ({
    system: env.SYSTEM,
    port: env.PORT,
    rabbitmqUrl: env.RABBITMQ_URL,
    s3: {
      endpoint: env.S3_ENDPOINT,
      region: env.S3_REGION,
      bucket: env.S3_BUCKET,
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
      timeoutSeconds: env.S3_TIMEOUT_SECONDS,
    },
    databasePath: databasePath(env.DATABASE_URL, env.DATA_DIR),
    dataDir: resolve(env.DATA_DIR),
    maxUploadBytes: env.MAX_UPLOAD_BYTES,
    stallMs: env.STALL_SECONDS * 1000,
    maxRedrives: env.MAX_REDRIVES,
    multipartMaxAgeMs: env.MULTIPART_MAX_AGE_HOURS * 3_600_000,
    adminToken: env.ADMIN_TOKEN ?? null,
  }))
)
export type Config = v.InferOutput<typeof ConfigSchema>

export function readConfig(env: Record<string, string | undefined>): Config {
  return readEnv(ConfigSchema, env)
}

function databasePath(url: string | undefined, dataDir: string): string {
  if (!url) return join(resolve(dataDir), 'media.db')
  if (url === ':memory:') return url
  return resolve(url.replace(/^(sqlite|file):(\/\/)?/, ''))
}
