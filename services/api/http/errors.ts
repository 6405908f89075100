/** HTTP errors: every one answers `{"error": {"code", "message"}}` (ErrorSchema, which the OpenAPI document shows). */
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import * as v from 'valibot'

/** The body of every error answer. `ref` makes it one shared component of the OpenAPI document. */
export const ErrorSchema = v.pipe(
  v.object({
    error: v.object({
      code: v.pipe(
        v.string(),
        v.description('Machine-readable, snake_case: not_found, bad_request, unauthorized, payload_too_large, …')
      ),
      message: v.pipe(
        v.string(),
        v.description('What went wrong, for people. It never echoes a secret and quotes input only briefly.')
      ),
    }),
  }),
  v.metadata({ ref: 'Error' })
)
export type ErrorBody = v.InferOutput<typeof ErrorSchema>

export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    /** Headers the answer carries, such as `Retry-After`. */
    readonly headers: Record<string, string> = {}
  ) {
    super(message)
  }
  toJSON(): ErrorBody {
    return { error: { code: this.code, message: this.message } }
  }
}

/** The code of an error that hono's own middleware raised (its message is kept; only the code is ours). */
export function codeOfStatus(status: number): string {
  if (status === 401) return 'unauthorized'
  if (status === 404) return 'not_found'
  if (status === 413) return 'payload_too_large'
  if (status === 415) return 'unsupported_media_type'
  return status < 500 ? 'bad_request' : 'internal'
}
