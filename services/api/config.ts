/** The API's configuration, read once from the environment at start. */
import { join, resolve } from 'node:path'
import * as v from 'valibot'
import { BrokerEnv, S3BucketEnv, S3Env, bytesVar, countVar, readEnv } from '@app/shared'
import { LogEnv, logSettings } from '@app/shared/ops'
import { KeySchema, TenantSchema } from './auth/keys.ts'
import { SEGMENT_SOURCES } from './playback/addresses.ts'
import type { Database } from './store/open.ts'

/** `postgres://…` (or `postgresql://…`) for PostgreSQL; a path, `sqlite:<path>` or `:memory:` for SQLite. */
const DatabaseUrl = v.optional(
  v.pipe(
    v.string(),
    v.check(
      (s) =>
        /^postgres(ql)?:\/\//.test(s)
          ? URL.canParse(s)
          : s === ':memory:' || s.startsWith('sqlite:') || s.startsWith('file:') || !s.includes('://'),
      'must be postgres://user@host:port/database, a SQLite path, or sqlite:<path>'
    )
  )
)

/** `tenant:key,tenant:key`: keys an operator configures this way; each is stored (hashed) at start. */
const ApiKeys = v.optional(
  v.pipe(
    v.string(),
    v.transform((s) =>
      s
        .split(',')
        .map((pair) => pair.trim())
        .filter(Boolean)
    ),
    v.array(
      v.pipe(
        v.string(),
        v.transform((pair) => ({
          tenant: pair.slice(0, Math.max(0, pair.indexOf(':'))),
          key: pair.slice(pair.indexOf(':') + 1),
        })),
        v.object({ tenant: TenantSchema, key: KeySchema })
      )
    )
  ),
  ''
)
/** Origins allowed to call the API from a browser: a comma-separated list of `scheme://host[:port]`, or `*`. */
const CorsOrigins = v.optional(
  v.pipe(
    v.string(),
    v.transform((s) =>
      s
        .split(',')
        .map((o) => o.trim())
        .filter(Boolean)
    ),
    v.array(
      v.pipe(
        v.string(),
        v.regex(/^(\*|https?:\/\/[^/\s,]+)$/, 'each origin must be * or scheme://host[:port] with no path')
      )
    )
  ),
  ''
)
/** `true` or `false`. */
const flagVar = v.optional(
  v.pipe(
    v.picklist(['true', 'false'], 'must be true or false'),
    v.transform((s) => s === 'true')
  ),
  'false'
)
/** Standard Webhooks' waits after a failed attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h. */
const STANDARD_SCHEDULE_SECONDS = [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
/** Seconds, comma-separated (decimals allowed): the waits between webhook attempts. */
const ScheduleVar = v.optional(
  v.pipe(
    v.string(),
    v.regex(/^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$/, 'must be seconds, comma-separated, such as 5,300,1800'),
    v.transform((s) => s.split(',').map((n) => Math.round(Number(n) * 1000)))
  ),
  STANDARD_SCHEDULE_SECONDS.join(',')
)
const PublicUrl = v.optional(
  v.pipe(
    v.string(),
    v.url('must be a URL'),
    v.regex(/^https?:\/\/[^/]+\/?$/, 'must be scheme://host[:port], with no path')
  )
)
const wholeVar = (fallback: number, max: number) =>
  v.optional(
    v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number), v.maxValue(max)),
    String(fallback)
  )

/** Where the records are: all the key CLI needs. */
const DatabaseEnv = {
  DATABASE_URL: DatabaseUrl,
  DATA_DIR: v.optional(v.pipe(v.string(), v.nonEmpty()), './.data'),
}

const ConfigSchema = v.pipe(
  v.object({
    ...BrokerEnv,
    ...S3Env,
    ...S3BucketEnv,
    ...DatabaseEnv,
    PORT: countVar(3000, 65535),
    MAX_UPLOAD_BYTES: bytesVar('2G'),
    // A processing job silent this long is stalled (processors send a heartbeat every 15 s).
    STALL_SECONDS: countVar(120, 86400),
    MAX_REDRIVES: v.optional(
      v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number), v.maxValue(100)),
      '3'
    ),
    // Multipart uploads left unfinished this long (a process killed mid-upload) are aborted by the sweeper.
    MULTIPART_MAX_AGE_HOURS: countVar(24, 24 * 365),
    ADMIN_TOKEN: v.optional(v.pipe(v.string(), v.minLength(16, 'must be at least 16 characters'))),
    // `keys` (the default): every request needs an API key. `none` runs the API open, as the tenant `default`.
    AUTH: v.optional(v.picklist(['keys', 'none'], 'must be keys or none'), 'keys'),
    API_KEYS: ApiKeys,
    RATE_LIMIT_PER_MINUTE: wholeVar(6000, 10_000_000),
    MAX_CONCURRENT_UPLOADS: countVar(8, 10_000),
    // Event streams and sockets (GET /v1/events, /v1/ws) one key may hold open at once, across every instance.
    MAX_STREAMS_PER_KEY: countVar(20, 100_000),
    // How long the event log keeps a change, so a client can resume after it (a day by default).
    EVENTS_RETENTION_HOURS: countVar(24, 24 * 365),
    // A tenant with more interactive jobs than this waiting for a processor has its further jobs queued as bulk (0: never).
    FAIR_SHARE_WAITING_JOBS: wholeVar(100, 1_000_000),
    // A slow upload is cut: nothing for this long, or less than UPLOAD_MIN_RATE over this long.
    UPLOAD_STALL_SECONDS: countVar(30, 3600),
    UPLOAD_MIN_RATE: bytesVar('1k'),
    CORS_ORIGINS: CorsOrigins,
    ...LogEnv,
    // Where clients reach this API: the outputs' URLs in webhook bodies (requests use their own origin).
    PUBLIC_URL: PublicUrl,
    // Who serves HLS segments and storyboard sprites to a player that came through a signed link: the API (`api`),
    // or the store through presigned URLs (`s3`: the bytes skip the API; a browser needs CORS on the bucket).
    PLAYBACK_SEGMENTS: v.optional(v.picklist(SEGMENT_SOURCES, 'must be api or s3'), 'api'),
    WEBHOOK_ALLOW_PRIVATE: flagVar,
    WEBHOOK_ALLOW_HTTP: flagVar,
    WEBHOOK_TIMEOUT_SECONDS: countVar(15, 300),
    WEBHOOK_RETRY_HOURS: countVar(72, 24 * 30),
    WEBHOOK_RETRY_SCHEDULE: ScheduleVar,
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
    database: database(env.DATABASE_URL, env.DATA_DIR),
    dataDir: resolve(env.DATA_DIR),
    maxUploadBytes: env.MAX_UPLOAD_BYTES,
    stallMs: env.STALL_SECONDS * 1000,
    maxRedrives: env.MAX_REDRIVES,
    fairShare: env.FAIR_SHARE_WAITING_JOBS,
    maxStreamsPerKey: env.MAX_STREAMS_PER_KEY,
    eventsKeepMs: env.EVENTS_RETENTION_HOURS * 3_600_000,
    multipartMaxAgeMs: env.MULTIPART_MAX_AGE_HOURS * 3_600_000,
    adminToken: env.ADMIN_TOKEN ?? null,
    auth: env.AUTH,
    apiKeys: env.API_KEYS,
    limits: {
      requestsPerMinute: env.RATE_LIMIT_PER_MINUTE,
      concurrentUploads: env.MAX_CONCURRENT_UPLOADS,
      pace: { windowMs: env.UPLOAD_STALL_SECONDS * 1000, minBytesPerSecond: env.UPLOAD_MIN_RATE },
    },
    corsOrigins: env.CORS_ORIGINS,
    playbackSegments: env.PLAYBACK_SEGMENTS,
    log: logSettings(env),
    webhooks: {
      allowPrivate: env.WEBHOOK_ALLOW_PRIVATE,
      allowHttp: env.WEBHOOK_ALLOW_HTTP,
      timeoutMs: env.WEBHOOK_TIMEOUT_SECONDS * 1000,
      giveUpAfterMs: env.WEBHOOK_RETRY_HOURS * 3_600_000,
      scheduleMs: env.WEBHOOK_RETRY_SCHEDULE,
      publicUrl: (env.PUBLIC_URL ?? `http://127.0.0.1:${env.PORT}`).replace(/\/$/, ''),
    },
  }))
)
export type Config = v.InferOutput<typeof ConfigSchema>

export function readConfig(env: Record<string, string | undefined>): Config {
  return readEnv(ConfigSchema, env)
}

const DatabaseConfigSchema = v.pipe(
  v.object(DatabaseEnv),
  v.transform((env) => ({ database: database(env.DATABASE_URL, env.DATA_DIR), dataDir: resolve(env.DATA_DIR) }))
)

/** The database settings alone (for tools that need no broker or S3, such as `bun run keys`). */
export function readDatabaseConfig(env: Record<string, string | undefined>) {
  return readEnv(DatabaseConfigSchema, env)
}

/**
 * The HTTP server's own body cap, well above MAX_UPLOAD_BYTES: the API's streaming limit must be the one that
 * answers (413 with our error body, the S3 upload aborted). A client sending faster than the upload is stored gets
 * ahead of the API's reading by what the server buffers; at the limit itself the server would win that race.
 */
export function serverBodyCap(maxUploadBytes: number): number {
  return maxUploadBytes * 2 + 64 * 1024 * 1024
}

function database(url: string | undefined, dataDir: string): Database {
  if (url && /^postgres(ql)?:\/\//.test(url)) return { kind: 'postgres', url }
  if (!url) return { kind: 'sqlite', path: join(resolve(dataDir), 'media.db') }
  if (url === ':memory:') return { kind: 'sqlite', path: url }
  return { kind: 'sqlite', path: resolve(url.replace(/^(sqlite|file):(\/\/)?/, '')) }
}
