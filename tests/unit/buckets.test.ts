/** Bucket confinement (ALLOWED_BUCKETS), apart from the broker: the variable's parsing, its default, the matching rule. */
import { describe, expect, test } from 'bun:test'
import * as v from 'valibot'
import { readEnv } from '@app/shared'
import {
  AllowedBucketsSchema,
  ProcessorEnv,
  confinementFailure,
  runtimeSettings,
  type BucketScope,
} from '@app/shared/processor'

const CREDENTIALS = { S3_ACCESS_KEY_ID: 'id', S3_SECRET_ACCESS_KEY: 'secret' }
const allowedBuckets = (env: Record<string, string>) =>
  runtimeSettings(readEnv(v.object(ProcessorEnv), { ...CREDENTIALS, ...env }), {
    type: 'images',
    concurrency: 1,
    timeoutSeconds: 1,
    tmpDir: '/tmp',
  }).allowedBuckets
const scopes = (text: string) => v.parse(AllowedBucketsSchema, text)
const request = (source: string, output: string) => {
  const [sourceBucket, ...key] = source.split('/')
  const [outputBucket, ...prefix] = output.split('/')
  return {
    source: { bucket: sourceBucket!, key: key.join('/') },
    output: { bucket: outputBucket!, prefix: prefix.join('/') },
  }
}

describe('ALLOWED_BUCKETS', () => {
  test('unset, it is all of S3_BUCKET, and S3_BUCKET defaults to media', () => {
    expect(allowedBuckets({ S3_BUCKET: 'uploads' })).toEqual([{ bucket: 'uploads', prefix: '' }])
    expect(allowedBuckets({})).toEqual([{ bucket: 'media', prefix: '' }])
  })

  test('entries are comma-separated, each a bucket or bucket/prefix, blanks around them ignored', () => {
    expect(
      allowedBuckets({ ALLOWED_BUCKETS: ' media , shared.assets/tenant-a/ ,other/x/y', S3_BUCKET: 'ignored' })
    ).toEqual<BucketScope[]>([
      { bucket: 'media', prefix: '' },
      { bucket: 'shared.assets', prefix: 'tenant-a/' },
      { bucket: 'other', prefix: 'x/y' },
    ])
    expect(scopes('media/')).toEqual([{ bucket: 'media', prefix: '' }])
  })

  test('a wrong value is a configuration error naming the variable and the bad entry', () => {
    expect(() => allowedBuckets({ ALLOWED_BUCKETS: 'media,Not_A_Bucket' })).toThrow(
      /ALLOWED_BUCKETS\.1: each entry must be a bucket name, or bucket\/prefix \(got "Not_A_Bucket"\)/
    )
    expect(() => allowedBuckets({ ALLOWED_BUCKETS: ' , ' })).toThrow(/ALLOWED_BUCKETS: must name at least one bucket/)
    expect(() => allowedBuckets({ ALLOWED_BUCKETS: 'media/a b' })).toThrow(/ALLOWED_BUCKETS/)
  })
})

describe('confinementFailure', () => {
  test('a whole bucket admits any key in it, and nothing in another bucket', () => {
    const media = scopes('media')
    expect(confinementFailure(media, request('media/a/b', 'media/out/1'))).toBeNull()
    expect(confinementFailure(media, request('private/a/b', 'media/out/1'))).toBe(
      'its source private/a/b is outside ALLOWED_BUCKETS (media)'
    )
    expect(confinementFailure(media, request('media/a/b', 'private/out/1'))).toBe(
      'its output private/out/1/ is outside ALLOWED_BUCKETS (media)'
    )
  })

  test('a prefix is a plain string prefix of the key: S3 keys are not paths', () => {
    const loose = scopes('media/tenant-a')
    expect(confinementFailure(loose, request('media/tenant-a/x', 'media/tenant-a/out'))).toBeNull()
    // Without a trailing slash the entry also admits keys that merely start the same.
    expect(confinementFailure(loose, request('media/tenant-ab/x', 'media/tenant-abc'))).toBeNull()
    const strict = scopes('media/tenant-a/')
    expect(confinementFailure(strict, request('media/tenant-ab/x', 'media/tenant-a/out'))).toMatch(
      /its source media\/tenant-ab\/x is outside ALLOWED_BUCKETS \(media\/tenant-a\/\)/
    )
    expect(confinementFailure(strict, request('media/tenant-a/x', 'media/tenant-b/out'))).toMatch(
      /its output media\/tenant-b\/out\/ is outside/
    )
    // Compared as given: case matters.
    expect(confinementFailure(strict, request('media/Tenant-a/x', 'media/tenant-a/out'))).not.toBeNull()
  })

  test('the outputs are the keys under `<prefix>/`, so the prefix that names the folder itself is inside it', () => {
    expect(confinementFailure(scopes('media/tenant-a/'), request('media/tenant-a/x', 'media/tenant-a'))).toBeNull()
  })

  test('source and output may be in different entries', () => {
    const two = scopes('originals/in/,renditions')
    expect(confinementFailure(two, request('originals/in/x', 'renditions/job-1'))).toBeNull()
    expect(confinementFailure(two, request('renditions/x', 'originals/in/job-1'))).toBeNull()
    expect(confinementFailure(two, request('originals/x', 'renditions/job-1'))).toBe(
      'its source originals/x is outside ALLOWED_BUCKETS (originals/in/, renditions)'
    )
  })
})
