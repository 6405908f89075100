/**
 * An S3 call made on a client's behalf, answered in HTTP terms: S3's own refusal of what the client sent (a wrong
 * ETag, an unknown upload) is a 400 or 404 naming it; an operation the store lacks (ListParts, on some S3-compatible servers) a 501;
 * anything else is S3 being unavailable (503, try again).
 */
import { classifyS3Error } from '@app/shared'
import { ApiError } from '../http/errors.ts'

export async function onClientsBehalf<T>(call: () => Promise<T>): Promise<Awaited<T>> {
  try {
    return await call()
  } catch (error) {
    if (error instanceof ApiError) throw error
    const failure = classifyS3Error(error)
    if (failure.kind === 'missing') throw new ApiError(404, 'not_found', `S3 has no such upload (${failure.name})`)
    if (failure.kind === 'unsupported') {
      throw new ApiError(
        501,
        'not_supported',
        `this S3 store does not support the operation (${failure.name}); use AWS S3, MinIO or another complete implementation`
      )
    }
    if (failure.status === 400)
      throw new ApiError(400, 'bad_request', `S3 refused the request: ${failure.name}: ${(error as Error).message}`)
    throw new ApiError(503, 'storage_unavailable', 'S3 could not be reached; try again shortly', { 'Retry-After': '5' })
  }
}
