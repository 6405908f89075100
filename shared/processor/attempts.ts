/** What a delivery's headers say: which attempt of its job it is, and what a copy published again must carry. */
import { ATTEMPTS_HEADER } from '../topology.ts'

/**
 * Which attempt of its job a delivery is: the attempts that counted before this copy was published
 * (`x-media-attempts`, absent: 0), plus the broker's count of this copy's earlier deliveries (`x-delivery-count`,
 * absent: 0), plus one.
 */
export function attemptOf(headers: Record<string, unknown> | undefined): number {
  const count = (value: unknown) => (typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : 0)
  return count(headers?.[ATTEMPTS_HEADER]) + count(headers?.['x-delivery-count']) + 1
}

/**
 * The headers of a request published again: its own (a backend's trace ids, say) without those the broker put on
 * the old copy's deliveries, and `x-media-attempts` set to the attempts that counted.
 */
export function carriedHeaders(
  headers: Record<string, unknown> | undefined,
  attemptsMade: number
): Record<string, string | number> {
  const kept: Record<string, string | number> = {}
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (/^x-(delivery-count|acquired-count|death$|first-death-|last-death-)/.test(name)) continue
    if (typeof value === 'string' || typeof value === 'number') kept[name] = value
  }
  kept[ATTEMPTS_HEADER] = attemptsMade
  return kept
}
