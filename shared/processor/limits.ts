/**
 * How a processor's limits refuse a file (`limit_exceeded`, naming the variable and what the file holds), and the
 * byte limit on an original (applied by original.ts and the download in storage.ts). Imports nothing of the
 * storage: the storage imports this.
 */
import { JobError } from './errors.ts'

/** A byte limit and the variable that sets it: a refusal names both, so an operator knows what to raise. */
export interface ByteLimit {
  maxBytes: number
  variable: string
}

/** A refusal over a limit, worded the same by every check: `<what the file holds>, over <VARIABLE> (<limit>)`. */
export function overLimit(found: string, variable: string, limit: string | number): JobError {
  return new JobError('limit_exceeded', `${found}, over ${variable} (${limit})`)
}

/** `1.5 GiB`, `200 MiB`, `12 KiB`, `900 bytes`: the units `bytesVar` reads (powers of 1024). */
export function formatBytes(bytes: number): string {
  for (const [unit, size] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (bytes >= size) return `${Math.round((bytes / size) * 10) / 10} ${unit}`
  }
  return `${bytes} bytes`
}

/** The refusal of an original of `bytes`; `stopped` when its download was cut off there, its real size unknown. */
export function byteLimitFailure(bytes: number, limit: ByteLimit, stopped = false): JobError {
  const found = stopped
    ? `the original's download was stopped after ${bytes} bytes`
    : `the original is ${formatBytes(bytes)} (${bytes} bytes)`
  return overLimit(found, limit.variable, formatBytes(limit.maxBytes))
}
