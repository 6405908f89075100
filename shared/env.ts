/**
 * Environment variables every service reads the same way, as valibot entries, and `readEnv`, which turns a
 * failed parse into one message naming each bad variable. Each service composes its own schema from these.
 */
import * as v from 'valibot'
import { parseBrokerUrls } from './broker-urls.ts'
import { SystemSchema } from './names.ts'

/** A positive whole number given as a string; the default is an input, so it runs through the same checks. */
export const countVar = (fallback: number, max = 1_000_000) =>
  v.optional(
    v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number), v.minValue(1), v.maxValue(max)),
    String(fallback)
  )
/** A byte count: a whole number with an optional k/M/G suffix (powers of 1024), e.g. `500M`. */
export const bytesVar = (fallback: string) =>
  v.optional(
    v.pipe(
      v.string(),
      v.regex(/^\d+\s*[kKmMgG]?[iI]?[bB]?$/, 'must be a byte count such as 1048576, 500M or 2G'),
      v.transform((s) => {
        const m = /^(\d+)\s*([kKmMgG]?)/.exec(s)!
        const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g']
        return Number(m[1]) * unit
      }),
      v.minValue(1)
    ),
    fallback
  )
const urlVar = (protocols: string[]) =>
  v.pipe(
    v.string(),
    v.url('must be a URL'),
    v.check(
      (s) => protocols.includes(new URL(s).protocol),
      `must start with ${protocols.map((p) => p + '//').join(' or ')}`
    )
  )

/** One broker URL, or the comma-separated URLs of a cluster's nodes; parsed into the list (see broker-urls.ts). */
const brokerUrlsVar = v.pipe(
  v.string(),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const parsed = parseBrokerUrls(dataset.value)
    if (parsed.ok) return parsed.urls
    addIssue({ message: parsed.reason })
    return NEVER
  })
)

/** SYSTEM and RABBITMQ_URL (a list of URLs: one broker, or the nodes of a cluster to connect to in turn). */
export const BrokerEnv = {
  SYSTEM: v.optional(SystemSchema, 'media'),
  RABBITMQ_URL: v.optional(brokerUrlsVar, 'amqp://guest:guest@127.0.0.1:5672'),
}
/** S3_* for a client: an endpoint is optional (AWS when absent); credentials are required. */
export const S3Env = {
  S3_ENDPOINT: v.optional(urlVar(['http:', 'https:'])),
  S3_REGION: v.optional(
    v.pipe(v.string(), v.regex(/^[a-z0-9-]{2,32}$/, 'must be a region name such as us-east-1')),
    'us-east-1'
  ),
  S3_ACCESS_KEY_ID: v.pipe(v.string('is required'), v.nonEmpty('is required')),
  S3_SECRET_ACCESS_KEY: v.pipe(v.string('is required'), v.nonEmpty('is required')),
  // Each S3 request (one attempt of up to 3) fails after this long: a hung store never hangs a job.
  S3_TIMEOUT_SECONDS: countVar(30, 3600),
}

/** S3_BUCKET, for the side that chooses where objects go (processors get buckets in their requests). */
export const S3BucketEnv = {
  S3_BUCKET: v.optional(
    v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name')),
    'media'
  ),
}

/** Parses `env` against `schema`; on failure throws one Error listing every variable that is wrong and why. */
export function readEnv<S extends v.GenericSchema>(
  schema: S,
  env: Record<string, string | undefined>
): v.InferOutput<S> {
  const result = v.safeParse(schema, env)
  if (result.success) return result.output
  const lines = result.issues.map((issue) => {
    const name = issue.path?.map((p) => String(p.key)).join('.') ?? '(environment)'
    // Never echo secrets (a URL may hold a password).
    const secret = /SECRET|URL|PASSWORD|TOKEN|KEY/.test(name)
    const shown = typeof issue.input === 'string' && !secret ? ` (got ${JSON.stringify(issue.input.slice(0, 60))})` : ''
    return `  ${name}: ${issue.message}${shown}`
  })
  throw new Error(`Invalid environment:\n${lines.join('\n')}`)
}

/**
 * The options every service gives `new S3Client(…)` (plain data, so this package needs no SDK). For a custom
 * endpoint: path-style addressing, and checksums only where required, because S3-compatible stores (the embedded one, MinIO,
 * R2) mishandle the SDK's default aws-chunked checksums. Timeouts throw: without them a hung S3 hangs a job forever.
 */
export function s3ClientOptions(s3: {
  endpoint?: string
  region: string
  accessKeyId: string
  secretAccessKey: string
  timeoutSeconds: number
}) {
  return {
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: Boolean(s3.endpoint),
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    ...(s3.endpoint
      ? { requestChecksumCalculation: 'WHEN_REQUIRED' as const, responseChecksumValidation: 'WHEN_REQUIRED' as const }
      : {}),
    requestHandler: { requestTimeout: s3.timeoutSeconds * 1000, connectionTimeout: 5_000, throwOnRequestTimeout: true },
    maxAttempts: 3,
  }
}

/**
 * The same store for Bun's own S3 client (`new Bun.S3Client(…)`), addressed as the SDK addresses it: path-style on
 * a custom endpoint (the embedded store, moto, MinIO), virtual-hosted on AWS. A plain object, so this file stays runtime-free.
 */
export function bunS3Options(s3: { endpoint?: string; region: string; accessKeyId: string; secretAccessKey: string }) {
  return {
    endpoint: s3.endpoint,
    region: s3.region,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    virtualHostedStyle: !s3.endpoint,
  }
}
