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
    },
    databasePath: databasePath(env.DATABASE_URL, env.DATA_DIR),
    dataDir: resolve(env.DATA_DIR),
    maxUploadBytes: env.MAX_UPLOAD_BYTES,
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
