/**
 * The environment every processor reads the same way, and the settings the runtime takes. Each processor adds
 * its own variables (concurrency, limits, time per job, work directory) and builds its settings with
 * `runtimeSettings`.
 */
import * as v from 'valibot'
import { BrokerEnv, S3BucketEnv, S3Env, countVar, readEnv } from '../env.ts'
import { queueNames, type MediaType, type QueueNames } from '../names.ts'
import { LogEnv, logSettings, type LogSettings } from '../ops/log.ts'
import { HEARTBEAT_SECONDS } from '../topology.ts'
import { AllowedBucketsSchema, type BucketScope } from './buckets.ts'
import type { S3Settings } from './storage.ts'

export const ProcessorEnv = {
  ...BrokerEnv,
  ...S3Env,
  // Where requests may point the processor (buckets.ts). Unset: all of S3_BUCKET, which is read for nothing else.
  ...S3BucketEnv,
  ALLOWED_BUCKETS: v.optional(AllowedBucketsSchema),
  HEARTBEAT_SECONDS: countVar(HEARTBEAT_SECONDS, 3600),
  SHUTDOWN_GRACE_SECONDS: countVar(25, 3600),
  // How long a job may hold its delivery before it is acked and the job leased. Must be below the broker's
  // consumer_timeout (30 min by default; its check runs about once a minute, so leave a margin of minutes):
  // past that, RabbitMQ closes the channel and redelivers the job while it still runs here.
  ACK_DEADLINE_SECONDS: countVar(1500, 7 * 86400),
  ...LogEnv,
  // `/metrics`, `/livez` and `/readyz` on this port; unset: no listener (two processors on one host need two ports).
  METRICS_PORT: v.optional(
    v.pipe(v.string(), v.regex(/^\d+$/, 'must be a port number'), v.transform(Number), v.minValue(1), v.maxValue(65535))
  ),
}
type ProcessorEnvValues = v.InferOutput<v.ObjectSchema<typeof ProcessorEnv, undefined>>

/**
 * A processor's `readConfig`: the variables every processor reads and its `own`, parsed once (one error names every
 * bad variable), then turned into its configuration by `build`.
 */
export function configReader<E extends v.ObjectEntries, C>(
  own: E,
  build: (env: v.InferOutput<v.ObjectSchema<typeof ProcessorEnv & E, undefined>>) => C
) {
  const schema = v.pipe(v.object({ ...ProcessorEnv, ...own }), v.transform(build))
  return (env: Record<string, string | undefined>): C => readEnv(schema, env)
}

export interface RuntimeSettings {
  type: MediaType
  system: string
  /** RABBITMQ_URL: one broker, or the nodes of a cluster, tried in turn. */
  rabbitmqUrl: string[]
  queues: QueueNames
  s3: S3Settings
  /** The buckets and prefixes a request may name; a request outside them is refused like a malformed one. */
  allowedBuckets: BucketScope[]
  /** Jobs at once, leased ones included. */
  concurrency: number
  /** Wall-clock limit of one attempt of a job; past it the job fails with `timeout`. */
  timeoutMs: number
  /** Where work directories go (`<tmpDir>/<pid>/<jobId>`). */
  tmpDir: string
  heartbeatMs: number
  shutdownGraceMs: number
  ackDeadlineMs: number
  log: LogSettings
  /** Where `/metrics`, `/livez` and `/readyz` listen (0: any free port); null: no listener. */
  metricsPort: number | null
}

export function runtimeSettings<T extends MediaType>(
  env: ProcessorEnvValues,
  own: { type: T; concurrency: number; timeoutSeconds: number; tmpDir: string }
): RuntimeSettings & { type: T } {
  return {
    type: own.type,
    system: env.SYSTEM,
    rabbitmqUrl: env.RABBITMQ_URL,
    queues: queueNames(env.SYSTEM, own.type),
    s3: {
      endpoint: env.S3_ENDPOINT,
      region: env.S3_REGION,
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
      timeoutSeconds: env.S3_TIMEOUT_SECONDS,
    },
    allowedBuckets: env.ALLOWED_BUCKETS ?? [{ bucket: env.S3_BUCKET, prefix: '' }],
    concurrency: own.concurrency,
    timeoutMs: own.timeoutSeconds * 1000,
    tmpDir: own.tmpDir,
    heartbeatMs: env.HEARTBEAT_SECONDS * 1000,
    shutdownGraceMs: env.SHUTDOWN_GRACE_SECONDS * 1000,
    ackDeadlineMs: env.ACK_DEADLINE_SECONDS * 1000,
    log: logSettings(env),
    metricsPort: env.METRICS_PORT ?? null,
  }
}
