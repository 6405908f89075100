/**
 * What several API instances on one database agree on: timer rounds (a sweep done by one instance at a time),
 * leases (one holder of a thing at a time: a tus upload being written), and secrets made once and shared.
 */
import type { Db } from './db.ts'

export interface CoordinationRepo {
  /**
   * Whether this instance does the round of timer work `name` now: true for one caller at a time, and again only
   * `everyMs` later, across every instance on the database.
   */
  claimRound(name: string, everyMs: number): Promise<boolean>
  /**
   * Takes the lease `name` for `holder` until `ttlMs` from now, or renews it when `holder` has it: true then. False
   * while another holder's lease runs. What a lease guards is the caller's: one holder at a time across instances.
   */
  claimLease(name: string, holder: string, ttlMs: number): Promise<boolean>
  /** Gives the lease up, if `holder` has it. */
  releaseLease(name: string, holder: string): Promise<void>
  /** The secret `name`: `fresh` is kept the first time any instance asks, and every instance gets that one from then on. */
  sharedSecret(name: string, fresh: string): Promise<string>
}

/** `origin`: this instance, named as the holder of the rounds it takes. */
export function createCoordinationRepo(db: Db, origin: string | null): CoordinationRepo {
  return {
    async claimRound(name, everyMs) {
      const at = Date.now()
      // Inserted, or moved on when due: one instance gets the row back (the others' conditions fail on the new value).
      const row = await db.get(
        `INSERT INTO rounds (name, next_at, holder) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET next_at = excluded.next_at, holder = excluded.holder WHERE rounds.next_at <= ?
         RETURNING name`,
        [name, at + everyMs, origin, at]
      )
      return row !== undefined
    },
    async claimLease(name, holder, ttlMs) {
      const at = Date.now()
      // Inserted, or taken over when free (expired) or already this holder's; the others' conditions fail.
      const row = await db.get(
        `INSERT INTO leases (name, holder, until) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until WHERE leases.until < ? OR leases.holder = excluded.holder
         RETURNING name`,
        [name, holder, at + ttlMs, at]
      )
      return row !== undefined
    },
    async releaseLease(name, holder) {
      await db.run('DELETE FROM leases WHERE name = ? AND holder = ?', [name, holder])
    },
    async sharedSecret(name, fresh) {
      await db.run('INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING', [name, fresh])
      return String((await db.get('SELECT value FROM secrets WHERE name = ?', [name]))!.value)
    },
  }
}
