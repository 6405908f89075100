/**
 * AWS Signature Version 4, checked on the server: header-signed requests (`Authorization: AWS4-HMAC-SHA256 …`) and
 * query-signed presigned URLs (`X-Amz-Signature=…`). Only the one configured key pair is accepted. As S3 does: the
 * canonical URI is the path exactly as the client sent it (no second encoding, no normalising); the query is
 * decoded, RFC 3986-encoded again and sorted; signed headers are lowercased, trimmed, inner spaces collapsed.
 * Header-signed requests must be within 15 minutes of the store's clock; a presigned URL within its X-Amz-Expires
 * (at most 7 days). The payload hash the client claims (`x-amz-content-sha256`) is returned for the body to be
 * checked against while it is stored; aws-chunked uploads (`STREAMING-…`) are refused as not implemented.
 *
 * @see https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
 * @see https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { S3Error } from './xml.ts'

export interface Credentials {
  accessKeyId: string
  secretAccessKey: string
}

/** What the body must hash to: a lowercase hex SHA-256, or `UNSIGNED-PAYLOAD` (nothing to check). */
export type PayloadHash = string

export const UNSIGNED = 'UNSIGNED-PAYLOAD'
const ALGORITHM = 'AWS4-HMAC-SHA256'
const MAX_SKEW_MS = 15 * 60 * 1000
const MAX_EXPIRES_S = 7 * 24 * 3600

/** The request's target as sent: the raw path and raw query (without `?`). */
export interface RawTarget {
  path: string
  query: string
}

const signatureMismatch = () =>
  new S3Error(
    'SignatureDoesNotMatch',
    403,
    'The request signature we calculated does not match the signature you provided. Check your key and signing method.'
  )

/**
 * Checks the request's signature; returns the payload hash the body must match. Throws the S3Error S3 would answer
 * (AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed, AuthorizationHeaderMalformed…).
 */
export function verifyRequest(
  request: Request,
  target: RawTarget,
  credentials: Credentials,
  now = Date.now()
): PayloadHash {
  const authorization = request.headers.get('authorization')
  if (authorization !== null) return verifyHeaderSigned(request, target, authorization, credentials, now)
  if (/(?:^|&)X-Amz-Signature=/.test(target.query)) return verifyQuerySigned(request, target, credentials, now)
  throw new S3Error('AccessDenied', 403, 'Access Denied: the request is not signed (anonymous access is not allowed).')
}

function verifyHeaderSigned(
  request: Request,
  target: RawTarget,
  authorization: string,
  credentials: Credentials,
  now: number
): PayloadHash {
  const parsed =
    /^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-f]{64})\s*$/.exec(
      authorization
    )
  if (!parsed)
    throw new S3Error(
      'AuthorizationHeaderMalformed',
      400,
      'The authorization header is malformed: expected "AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…".'
    )
  const credential = parsed[1]!
  const signedHeaders = parsed[2]!
  const signature = parsed[3]!
  const amzDate = request.headers.get('x-amz-date') ?? ''
  const time = parseAmzDate(amzDate)
  if (time === undefined)
    throw new S3Error('AccessDenied', 403, 'AWS authentication requires a valid x-amz-date header (yyyyMMddTHHmmssZ).')
  const scope = checkCredential(credential, amzDate, credentials)
  if (Math.abs(now - time) > MAX_SKEW_MS)
    throw new S3Error(
      'RequestTimeTooSkewed',
      403,
      'The difference between the request time and the current time is too large.',
      { RequestTime: amzDate, ServerTime: new Date(now).toISOString(), MaxAllowedSkewMilliseconds: String(MAX_SKEW_MS) }
    )
  const payload = request.headers.get('x-amz-content-sha256')
  if (payload === null)
    throw new S3Error('InvalidRequest', 400, 'Missing required header for this request: x-amz-content-sha256.')
  if (payload.startsWith('STREAMING-'))
    throw new S3Error(
      'NotImplemented',
      501,
      `aws-chunked uploads (x-amz-content-sha256: ${payload}) are not implemented by this store; send the body as is (UNSIGNED-PAYLOAD or its SHA-256).`,
      { Header: 'x-amz-content-sha256' }
    )
  if (payload !== UNSIGNED && !/^[0-9a-f]{64}$/.test(payload))
    throw new S3Error(
      'InvalidArgument',
      400,
      'x-amz-content-sha256 must be UNSIGNED-PAYLOAD or the SHA-256 of the body in lowercase hex.',
      { ArgumentName: 'x-amz-content-sha256', ArgumentValue: payload }
    )
  const canonical = canonicalRequest(request, target, canonicalQuery(target.query, false), signedHeaders, payload)
  checkSignature(canonical, amzDate, scope, signature, credentials)
  return payload
}

function verifyQuerySigned(request: Request, target: RawTarget, credentials: Credentials, now: number): PayloadHash {
  const params = new Map<string, string>()
  for (const pair of target.query.split('&')) {
    const at = pair.indexOf('=')
    if (at > 0 && pair.startsWith('X-Amz-')) params.set(pair.slice(0, at), safeDecode(pair.slice(at + 1)))
  }
  const malformed = (what: string) => new S3Error('AuthorizationQueryParametersError', 400, what)
  if (params.get('X-Amz-Algorithm') !== ALGORITHM) throw malformed('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256".')
  const credential = params.get('X-Amz-Credential')
  const amzDate = params.get('X-Amz-Date') ?? ''
  const signedHeaders = params.get('X-Amz-SignedHeaders')
  const signature = params.get('X-Amz-Signature') ?? ''
  const expiresText = params.get('X-Amz-Expires') ?? ''
  if (!credential || !signedHeaders || !/^[0-9a-f]{64}$/.test(signature))
    throw malformed(
      'Query-string authentication requires X-Amz-Credential, X-Amz-SignedHeaders and X-Amz-Signature (64 hex digits).'
    )
  const time = parseAmzDate(amzDate)
  if (time === undefined) throw malformed('X-Amz-Date must be in the ISO 8601 basic format yyyyMMddTHHmmssZ.')
  const expires = /^[0-9]{1,7}$/.test(expiresText) ? Number(expiresText) : Number.NaN
  if (!(expires >= 1 && expires <= MAX_EXPIRES_S))
    throw malformed(`X-Amz-Expires must be a whole number of seconds from 1 to ${MAX_EXPIRES_S} (7 days).`)
  const scope = checkCredential(credential, amzDate, credentials)
  if (now > time + expires * 1000)
    throw new S3Error('AccessDenied', 403, 'Request has expired', {
      'X-Amz-Expires': String(expires),
      Expires: new Date(time + expires * 1000).toISOString(),
      ServerTime: new Date(now).toISOString(),
    })
  if (time > now + MAX_SKEW_MS) throw new S3Error('AccessDenied', 403, 'Request is not valid yet')
  const payload = params.get('X-Amz-Content-Sha256') ?? UNSIGNED
  const canonical = canonicalRequest(request, target, canonicalQuery(target.query, true), signedHeaders, payload)
  checkSignature(canonical, amzDate, scope, signature, credentials)
  return payload
}

/** `AKID/yyyymmdd/region/s3/aws4_request`: the key must be ours and the date the request's; returns the scope. */
function checkCredential(credential: string, amzDate: string, credentials: Credentials): string {
  const parts = credential.split('/') as [string, string, string, string, string]
  if (parts.length !== 5 || parts[4] !== 'aws4_request' || parts[3] !== 's3')
    throw new S3Error(
      'AuthorizationHeaderMalformed',
      400,
      'The credential must be "<access key>/<yyyymmdd>/<region>/s3/aws4_request".'
    )
  if (!constantTimeEqual(parts[0], credentials.accessKeyId))
    throw new S3Error('InvalidAccessKeyId', 403, 'The AWS Access Key Id you provided does not exist in our records.', {
      AWSAccessKeyId: parts[0],
    })
  if (parts[1] !== amzDate.slice(0, 8))
    throw new S3Error('AuthorizationHeaderMalformed', 400, "The credential's date is not the request's date.")
  return parts.slice(1).join('/')
}

function canonicalRequest(
  request: Request,
  target: RawTarget,
  query: string,
  signedHeaders: string,
  payload: string
): string {
  // As S3 requires: a signature that left the host out would hold for a request to any host.
  if (!signedHeaders.split(';').includes('host'))
    throw new S3Error('AccessDenied', 403, 'There were headers present in the request which were not signed', {
      HeadersNotSigned: 'host',
    })
  let headers = ''
  for (const name of signedHeaders.split(';')) {
    const value = request.headers.get(name) ?? ''
    headers += `${name}:${value.trim().replace(/\s+/g, ' ')}\n`
  }
  return `${request.method}\n${target.path}\n${query}\n${headers}\n${signedHeaders}\n${payload}`
}

/** The query's pairs, decoded, RFC 3986-encoded and sorted; without X-Amz-Signature for a presigned URL. */
function canonicalQuery(query: string, presigned: boolean): string {
  if (query === '') return ''
  const pairs: [string, string][] = []
  for (const pair of query.split('&')) {
    if (pair === '') continue
    const at = pair.indexOf('=')
    const name = encodeRfc3986(safeDecode(at < 0 ? pair : pair.slice(0, at)))
    if (presigned && name === 'X-Amz-Signature') continue
    pairs.push([name, encodeRfc3986(safeDecode(at < 0 ? '' : pair.slice(at + 1)))])
  }
  pairs.sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
  return pairs.map(([name, value]) => `${name}=${value}`).join('&')
}

const signingKeys = new Map<string, Buffer>()

function checkSignature(
  canonical: string,
  amzDate: string,
  scope: string,
  signature: string,
  credentials: Credentials
): void {
  const stringToSign = `${ALGORITHM}\n${amzDate}\n${scope}\n${createHash('sha256').update(canonical).digest('hex')}`
  let key = signingKeys.get(scope)
  if (!key) {
    key = Buffer.from(`AWS4${credentials.secretAccessKey}`)
    for (const part of scope.split('/')) key = createHmac('sha256', key).update(part).digest()
    if (signingKeys.size > 64) signingKeys.clear()
    signingKeys.set(scope, key)
  }
  const expected = createHmac('sha256', key).update(stringToSign).digest()
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) throw signatureMismatch()
}

/** `yyyyMMddTHHmmssZ` as milliseconds, or undefined. */
function parseAmzDate(text: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text)
  if (!m) return undefined
  const [year, month, day, hour, minute, second] = m.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  const time = Date.UTC(year, month - 1, day, hour, minute, second)
  return Number.isNaN(time) ? undefined : time
}

function encodeRfc3986(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

function constantTimeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}
