/**
 * Which class a new job is: interactive (someone waits for it) or bulk (throughput work, after interactive work and
 * never on a processor's last free slot; see shared/PROTOCOL.md). Bulk when asked for (`priority=bulk`), when the
 * key is a bulk key, when it is a reprocess (unless asked otherwise), or when the tenant already has more than its
 * fair share of interactive jobs waiting: PeerTube's rule, so one tenant's flood cannot starve another's uploads.
 * Only interactive jobs count: a tenant's own bulk backlog (a library's reprocess) competes with nobody's uploads,
 * and must not demote that tenant's next upload.
 */
import type { JobClass } from '@app/shared'
import type { QuotaRepo } from '../store/quotas.ts'

/** What the caller asked for, a bulk key overriding it; null: nothing asked (the default applies). */
export function askedClass(asked: JobClass | null | undefined, key: JobClass): JobClass | null {
  return key === 'bulk' ? 'bulk' : (asked ?? null)
}

/** The class of a new job of a tenant with `waiting` interactive jobs waiting (`fairShare` 0: off). Pure. */
export function classFor(asked: JobClass | null, waiting: number, fairShare: number): JobClass {
  if (asked === 'bulk') return 'bulk'
  return fairShare > 0 && waiting > fairShare ? 'bulk' : 'interactive'
}

/** `classFor`, counting the tenant's waiting jobs only when it matters, and no further than the fair share. */
export async function chooseClass(
  quotas: Pick<QuotaRepo, 'waitingInteractive'>,
  tenant: string,
  asked: JobClass | null,
  fairShare: number
): Promise<JobClass> {
  if (asked === 'bulk' || fairShare <= 0) return classFor(asked, 0, fairShare)
  return classFor(asked, await quotas.waitingInteractive(tenant, fairShare + 1), fairShare)
}
