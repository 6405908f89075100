/** API keys: never the key itself, only its hash and a prefix to recognise it by. */
import type { JobClass } from '@app/shared'
import { isoNow, text, type Db, type Row } from './db.ts'

/** An API key as the store keeps it: never the key itself, only its hash (beside this record) and a prefix. */
export interface ApiKey {
  id: string
  tenant: string
  name: string | null
  /** The key's first characters, to recognise it by. */
  prefix: string
  /** The class of the jobs of its uploads: bulk for an importer's key, so its floods never cut in front. */
  priority: JobClass
  createdAt: string
  revokedAt: string | null
}

export interface KeyRepo {
  /** Stores a key by its hash; false when that hash is stored already (the existing record is left as it is). */
  create(key: ApiKey, hash: string): Promise<boolean>
  find(hash: string): Promise<{ record: ApiKey; hash: string } | undefined>
  /** Keys, newest first, of one tenant when given. */
  list(tenant?: string): Promise<ApiKey[]>
  /** Revokes a key (undefined: no such key); revoking twice keeps the first time. */
  revoke(id: string): Promise<ApiKey | undefined>
  countActive(): Promise<number>
}

const toKey = (r: Row): ApiKey => ({
  id: String(r.id),
  tenant: String(r.tenant),
  name: text(r.name),
  prefix: String(r.prefix),
  priority: r.class === 'bulk' ? 'bulk' : 'interactive',
  createdAt: String(r.created_at),
  revokedAt: text(r.revoked_at),
})

export function createKeyRepo(db: Db): KeyRepo {
  return {
    async create(key, hash) {
      const inserted = await db.run(
        'INSERT INTO api_keys (id, tenant, name, hash, prefix, class, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
        [key.id, key.tenant, key.name, hash, key.prefix, key.priority, key.createdAt, key.revokedAt]
      )
      return inserted > 0
    },
    async find(hash) {
      const row = await db.get('SELECT * FROM api_keys WHERE hash = ?', [hash])
      return row ? { record: toKey(row), hash: String(row.hash) } : undefined
    },
    async list(tenant) {
      const rows =
        tenant === undefined
          ? await db.all('SELECT * FROM api_keys ORDER BY created_at DESC')
          : await db.all('SELECT * FROM api_keys WHERE tenant = ? ORDER BY created_at DESC', [tenant])
      return rows.map(toKey)
    },
    async revoke(id) {
      return db.transaction(async (tx) => {
        await tx.run('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', [isoNow(), id])
        const row = await tx.get('SELECT * FROM api_keys WHERE id = ?', [id])
        return row ? toKey(row) : undefined
      })
    },
    async countActive() {
      return Number((await db.get('SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL'))!.n)
    },
  }
}
