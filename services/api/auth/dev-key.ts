/**
 * The development key of `bun run start`: on a fresh machine, with no keys at all, one is made for the tenant `dev`,
 * kept in `<DATA_DIR>/dev-api-key` (readable by its owner only) and shown once, so the system just works without
 * ever running open. Later starts find it there.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { authenticate, issueKey } from './keys.ts'
import type { Store } from '../store/open.ts'

export const DEV_TENANT = 'dev'

/** The development key and whether it was made now; null when other keys exist and the file holds no valid key. */
export async function ensureDevKey(
  store: Pick<Store, 'keys'>,
  file: string
): Promise<{ key: string; created: boolean } | null> {
  const kept = existsSync(file) ? readFileSync(file, 'utf8').trim() : ''
  if (kept && (await authenticate(store, kept))) return { key: kept, created: false }
  if ((await store.keys.countActive()) > 0) return null
  const { key } = await issueKey(store, DEV_TENANT, { name: 'development key (bun run start)' })
  writeFileSync(file, `${key}\n`, { mode: 0o600 })
  return { key, created: true }
}
