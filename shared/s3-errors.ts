/**
 * What an S3 failure means, read once for every service from what the AWS SDK (and Bun's client, whose errors carry
 * S3's code) report: a missing object or upload, a refusal that retrying cannot fix, an operation the store does not
 * implement (some S3-compatible servers have no ListParts), or the store being unavailable (timeouts, 5xx, throttling, a dropped
 * connection), which a retry may fix. Plain data: this package needs no SDK.
 */

export type S3FailureKind = 'missing' | 'refused' | 'unsupported' | 'unavailable'

export interface S3Failure {
  kind: S3FailureKind
  /** S3's error code (`NoSuchKey`, `AccessDenied`…) or the error's name. */
  name: string
  /** The HTTP status S3 answered, when it answered. */
  status: number | undefined
}

/** S3 error names that retrying cannot fix. */
const REFUSED_NAMES = new Set([
  'NoSuchBucket',
  'AccessDenied',
  'Forbidden',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'InvalidBucketName',
  'AllAccessDisabled',
  'AccountProblem',
])
/** Names of a missing object or multipart upload. */
const MISSING_NAMES = new Set(['NoSuchKey', 'NotFound', 'NoSuchUpload'])
/** HTTP statuses that retrying cannot fix; 404 is told apart by name, and 408, 409, 429 and 5xx are retried. */
const REFUSED_STATUSES = new Set([400, 401, 403, 411, 413])

/** The HTTP status of an SDK error (`$metadata.httpStatusCode`), if S3 answered. */
export const s3StatusOf = (error: unknown): number | undefined =>
  (error as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode

/** Sorts a failure of an S3 request. */
export function classifyS3Error(error: unknown): S3Failure {
  const name = (error as { name?: string; code?: string })?.code ?? (error as { name?: string })?.name ?? ''
  const status = s3StatusOf(error)
  // By name first: a missing bucket also answers 404, and is no missing object.
  if (REFUSED_NAMES.has(name)) return { kind: 'refused', name, status }
  if (MISSING_NAMES.has(name) || status === 404) return { kind: 'missing', name, status }
  if (status === 405 || status === 501 || name === 'NotImplemented' || name === 'MethodNotAllowed')
    return { kind: 'unsupported', name, status }
  if (status !== undefined && REFUSED_STATUSES.has(status)) return { kind: 'refused', name, status }
  return { kind: 'unavailable', name, status }
}
