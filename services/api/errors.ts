/** HTTP errors: every one answers `{"error": {"code", "message"}}`. */
import type { ContentfulStatusCode } from 'hono/utils/http-status'

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
  toJSON() {
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
