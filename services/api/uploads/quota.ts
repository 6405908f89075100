/**
 * A tenant's quota, judged before an upload stores a byte, on every way in (POST, tus creation, direct hand-out and
 * completion): 403 `quota_exceeded`, naming the quota, its value and where the tenant stands.
 */
import { ApiError } from '../http/errors.ts'
import type { Quota, QuotaRepo, Usage } from '../store/quotas.ts'

/** The first limit the next upload would break, as its message, or null. `bytes`: the upload's size, if known. Pure. */
export function quotaRefusal(quota: Quota, usage: Usage, bytes: number | null): string | null {
  if (quota.media !== null && usage.media + 1 > quota.media)
    return `the tenant's quota of ${quota.media} media is reached (it has ${usage.media})`
  if (quota.waitingJobs !== null && usage.waitingJobs + 1 > quota.waitingJobs)
    return `the tenant's quota of ${quota.waitingJobs} jobs waiting is reached (${usage.waitingJobs} are waiting; retry when they have run)`
  if (quota.storedBytes !== null) {
    const after = usage.storedBytes + (bytes ?? 0)
    // An upload of unknown size is let through while the tenant is under its quota (it is judged on the bytes before).
    if (bytes === null ? usage.storedBytes >= quota.storedBytes : after > quota.storedBytes)
      return bytes === null
        ? `the tenant's quota of ${quota.storedBytes} bytes stored is reached (it stores ${usage.storedBytes} bytes)`
        : `this upload of ${bytes} bytes would take the tenant past its quota of ${quota.storedBytes} bytes stored (it stores ${usage.storedBytes} bytes)`
  }
  return null
}

/** A Content-Length or Upload-Length header as a byte count, or null when absent or not one. */
export function declaredLength(header: string | null | undefined): number | null {
  return header && /^\d{1,15}$/.test(header) ? Number(header) : null
}

/** The 403 for an upload of `bytes` (null: unknown yet) when `tenant` is over its quota, or null. */
export async function quotaError(quotas: QuotaRepo, tenant: string, bytes: number | null): Promise<ApiError | null> {
  const quota = await quotas.get(tenant)
  if (!quota) return null
  const refusal = quotaRefusal(quota, await quotas.usage(tenant), bytes)
  return refusal ? new ApiError(403, 'quota_exceeded', `${refusal}; operators set quotas`) : null
}

/** Throws `quotaError`'s 403, if any. */
export async function checkQuota(quotas: QuotaRepo, tenant: string, bytes: number | null): Promise<void> {
  const refusal = await quotaError(quotas, tenant, bytes)
  if (refusal) throw refusal
}
