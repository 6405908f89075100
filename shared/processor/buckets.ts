/**
 * Bucket confinement: where a processor may read originals and write outputs (ALLOWED_BUCKETS). A request names its
 * buckets and keys, and the processor acts on them with its own credentials, so without this rule anyone who can
 * publish a request could have a processor read or overwrite any object those credentials reach.
 *
 * An entry is `bucket` (all of it) or `bucket/prefix`. Prefixes match as plain strings, because S3 keys are not
 * paths: `media/tenant-a` also admits `media/tenant-ab/…`; write `media/tenant-a/` to mean that folder only.
 */
import * as v from 'valibot'

export interface BucketScope {
  bucket: string
  /** Keys that start with this; `''` for the whole bucket. */
  prefix: string
}

/** ALLOWED_BUCKETS: comma-separated entries, blanks around them ignored, at least one. */
export const AllowedBucketsSchema = v.pipe(
  v.string(),
  v.transform((text) =>
    text
      .split(',')
      .map((entry) => entry.trim())
      .filter(Boolean)
  ),
  v.array(
    v.pipe(
      v.string(),
      v.regex(
        /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?:\/[A-Za-z0-9._/-]{0,1024})?$/,
        'each entry must be a bucket name, or bucket/prefix'
      )
    )
  ),
  v.minLength(1, 'must name at least one bucket'),
  v.transform((entries): BucketScope[] =>
    entries.map((entry) => {
      const slash = entry.indexOf('/')
      return slash < 0
        ? { bucket: entry, prefix: '' }
        : { bucket: entry.slice(0, slash), prefix: entry.slice(slash + 1) }
    })
  )
)

/** Whether every key that starts with `keys` in `bucket` is inside one scope. */
export function allows(scopes: readonly BucketScope[], bucket: string, keys: string): boolean {
  return scopes.some((scope) => scope.bucket === bucket && keys.startsWith(scope.prefix))
}

/**
 * Why a request reaches outside `scopes`, or null when it stays inside. The outputs (and the cancel marker) are
 * the keys under `<prefix>/`, so that is what is matched: an entry `media/tenant-a/` admits the prefix `tenant-a`.
 */
export function confinementFailure(
  scopes: readonly BucketScope[],
  request: { source: { bucket: string; key: string }; output: { bucket: string; prefix: string } }
): string | null {
  const { source, output } = request
  const allowed = `ALLOWED_BUCKETS (${scopes.map((s) => (s.prefix ? `${s.bucket}/${s.prefix}` : s.bucket)).join(', ')})`
  if (!allows(scopes, source.bucket, source.key))
    return `its source ${source.bucket}/${source.key} is outside ${allowed}`
  if (!allows(scopes, output.bucket, `${output.prefix}/`))
    return `its output ${output.bucket}/${output.prefix}/ is outside ${allowed}`
  return null
}
