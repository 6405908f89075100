/** HTTP errors: every one answers `{"error": {"code", "message"}}`. */
import type { ContentfulStatusCode } from 'hono/utils/http-status'

export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string
  ) {
    super(message)
  }
  toJSON() {
    return { error: { code: this.code, message: this.message } }
  }
}
