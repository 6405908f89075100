/**
 * A slow upload is cut, not waited on forever: a client that sends nothing for a whole window, or less than the
 * minimum rate over one (slowloris dribbling a byte every few seconds), gets 408 and its body stream errors, so
 * whoever stores it aborts (lib-storage aborts the S3 multipart upload). Only time spent waiting on the client
 * counts: the stream pulls on demand, so time the store takes to accept a part is not held against the client.
 */
import { ApiError } from '../http/errors.ts'

export interface PaceRule {
  /** The window: a read that waits this long, or a window of waiting that brings less than the minimum, cuts. */
  windowMs: number
  minBytesPerSecond: number
}

export function paced(body: ReadableStream<Uint8Array>, rule: PaceRule): ReadableStream<Uint8Array> {
  const reader = body.getReader()
  let waited = 0
  let bytes = 0
  const cut = (error: ApiError, controller: ReadableStreamDefaultController<Uint8Array>) => {
    controller.error(error)
    void reader.cancel(error).catch(() => {})
  }
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const started = performance.now()
        let timer: ReturnType<typeof setTimeout> | undefined
        const stalled = new Promise<'stalled'>(
          (resolve) => (timer = setTimeout(() => resolve('stalled'), rule.windowMs))
        )
        let chunk: Awaited<ReturnType<typeof reader.read>> | 'stalled'
        try {
          chunk = await Promise.race([reader.read(), stalled])
        } catch (error) {
          return controller.error(error)
        } finally {
          clearTimeout(timer)
        }
        if (chunk === 'stalled') {
          return cut(
            new ApiError(408, 'upload_timeout', `the upload stalled: no data arrived for ${rule.windowMs / 1000} s`),
            controller
          )
        }
        if (chunk.done) return controller.close()
        waited += performance.now() - started
        bytes += chunk.value.byteLength
        if (waited >= rule.windowMs) {
          const rate = bytes / (waited / 1000)
          if (rate < rule.minBytesPerSecond) {
            return cut(
              new ApiError(
                408,
                'upload_timeout',
                `the upload is too slow: ${Math.round(rate)} bytes/s, under the minimum of ${rule.minBytesPerSecond} bytes/s`
              ),
              controller
            )
          }
          waited = 0
          bytes = 0
        }
        controller.enqueue(chunk.value)
      },
      cancel: (reason) => reader.cancel(reason),
    },
    { highWaterMark: 0 }
  )
}
