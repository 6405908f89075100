/**
 * How a job ends early, as values the runtime tells apart: an expected failure (`JobError`, reported `failed`), a
 * cancel by the backend (`Cancelled`), and the loss of the job's delivery (`Interrupted`, nothing reported).
 * Anything else a job throws is a fault: retried after a backoff, then reported `gave_up`.
 */
import { failureClassOf, type ErrorCode, type ErrorInfo, type FailureClass } from '../messages.ts'

/** An expected failure: the job ends `failed` with this code (class from the code unless given), never retried. */
export class JobError extends Error {
  override name = 'JobError'
  readonly class: FailureClass

  constructor(
    readonly code: ErrorCode,
    message: string,
    options: { class?: FailureClass; cause?: unknown } = {}
  ) {
    super(message, { cause: options.cause })
    this.class = options.class ?? failureClassOf(code)
  }

  toInfo(): ErrorInfo {
    return { code: this.code, message: this.message.slice(0, 2000), class: this.class }
  }
}

/** Why a job stopped: its backend cancelled it (the broadcast, or the cancel marker). */
export class Cancelled extends Error {
  override name = 'Cancelled'
  constructor(how: string) {
    super(`the job was cancelled (${how})`)
  }
}

/** Why a job stopped without an outcome: its delivery went back to the broker (channel lost), or it is shutting down. */
export class Interrupted extends Error {
  override name = 'Interrupted'
}

/** An error's message with its cause's, for logs and `gave_up` messages. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  return error.cause instanceof Error ? `${error.message}: ${error.cause.message}` : error.message
}

/**
 * Settles when `work` does, or rejects with the signal's reason as soon as it aborts. For work that cannot be
 * interrupted (a sharp pipeline): it runs on and its outcome is dropped, so a cancel still answers at once.
 */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  // Abandoned work may still fail later (its directory removed): not an error of anyone's.
  work.catch(() => {})
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const timer = setTimeout(resolve, ms)
    signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
  })
}
