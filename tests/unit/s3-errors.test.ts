/** One reading of S3 failures for every service (shared/s3-errors.ts): what a failure means, by name, then status. */
import { expect, test } from 'bun:test'
import { classifyS3Error } from '@app/shared'

const sdk = (name: string, status?: number) =>
  Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } })

test('a missing object or upload, a refusal, an operation the store lacks, and the store unavailable are told apart', () => {
  const kinds = [
    [sdk('NoSuchKey', 404), 'missing'],
    [sdk('NotFound', 404), 'missing'],
    [sdk('NoSuchUpload', 404), 'missing'],
    [sdk('UnknownError', 404), 'missing'],
    // A missing bucket answers 404 too, and no retry brings it back.
    [sdk('NoSuchBucket', 404), 'refused'],
    [sdk('AccessDenied', 403), 'refused'],
    [sdk('SignatureDoesNotMatch', 403), 'refused'],
    [sdk('InvalidPart', 400), 'refused'],
    [sdk('MethodNotAllowed', 405), 'unsupported'],
    [sdk('NotImplemented', 501), 'unsupported'],
    [sdk('SlowDown', 503), 'unavailable'],
    [sdk('InternalError', 500), 'unavailable'],
    [sdk('RequestTimeout', 408), 'unavailable'],
    [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'unavailable'],
    // Bun's client carries S3's code in `code`.
    [Object.assign(new Error('no such key'), { name: 'S3Error', code: 'NoSuchKey' }), 'missing'],
  ] as const
  for (const [error, kind] of kinds)
    expect({ error: error.message, kind: classifyS3Error(error).kind }).toEqual({ error: error.message, kind })
  expect(classifyS3Error(sdk('AccessDenied', 403))).toEqual({ kind: 'refused', name: 'AccessDenied', status: 403 })
})
