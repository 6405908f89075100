/**
 * A tenant's own presets (named output recipes), kept as the validated definitions the API took (uploads/presets.ts
 * reads them), and which presets it uploads with when an upload names none.
 */
import type { MediaKind } from '@app/shared'
import type { Db, Row } from './db.ts'

/** Presets are of a media kind: a preset makes outputs of one kind of media. */
export type PresetKind = MediaKind

export interface StoredPreset {
  tenant: string
  name: string
  kind: PresetKind
  /** The definition as the API validated it (JSON). */
  definition: unknown
  createdAt: string
  updatedAt: string
}

export interface PresetRepo {
  /** A tenant's presets, by name. */
  list(tenant: string): Promise<StoredPreset[]>
  get(tenant: string, name: string): Promise<StoredPreset | undefined>
  /** Creates or replaces a preset; true when it was created. */
  put(preset: Omit<StoredPreset, 'createdAt' | 'updatedAt'>): Promise<boolean>
  remove(tenant: string, name: string): Promise<boolean>
  /** The presets a tenant's uploads get when they name none, by kind (absent: the built-in defaults). */
  defaults(tenant: string): Promise<Partial<Record<PresetKind, string[]>>>
  /** Sets them for a kind; null goes back to the built-in defaults. */
  setDefaults(tenant: string, kind: PresetKind, names: string[] | null): Promise<void>
}

const toPreset = (r: Row): StoredPreset => ({
  tenant: String(r.tenant),
  name: String(r.name),
  kind: r.kind as PresetKind,
  definition: JSON.parse(String(r.definition)),
  createdAt: String(r.created_at),
  updatedAt: String(r.updated_at),
})

export function createPresetRepo(db: Db): PresetRepo {
  return {
    async list(tenant) {
      return (await db.all('SELECT * FROM presets WHERE tenant = ? ORDER BY name', [tenant])).map(toPreset)
    },
    async get(tenant, name) {
      const row = await db.get('SELECT * FROM presets WHERE tenant = ? AND name = ?', [tenant, name])
      return row ? toPreset(row) : undefined
    },
    async put(preset) {
      const at = new Date().toISOString()
      const definition = JSON.stringify(preset.definition)
      const updated = await db.run(
        'UPDATE presets SET kind = ?, definition = ?, updated_at = ? WHERE tenant = ? AND name = ?',
        [preset.kind, definition, at, preset.tenant, preset.name]
      )
      if (updated > 0) return false
      const inserted = await db.run(
        'INSERT INTO presets (tenant, name, kind, definition, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
        [preset.tenant, preset.name, preset.kind, definition, at, at]
      )
      if (inserted > 0) return true
      // Lost a race with another create of the same name: this one replaces it.
      await db.run('UPDATE presets SET kind = ?, definition = ?, updated_at = ? WHERE tenant = ? AND name = ?', [
        preset.kind,
        definition,
        at,
        preset.tenant,
        preset.name,
      ])
      return false
    },
    async remove(tenant, name) {
      return (await db.run('DELETE FROM presets WHERE tenant = ? AND name = ?', [tenant, name])) > 0
    },
    async defaults(tenant) {
      const rows = await db.all('SELECT kind, names FROM preset_defaults WHERE tenant = ?', [tenant])
      return Object.fromEntries(rows.map((r) => [String(r.kind), JSON.parse(String(r.names)) as string[]]))
    },
    async setDefaults(tenant, kind, names) {
      if (names === null)
        return void (await db.run('DELETE FROM preset_defaults WHERE tenant = ? AND kind = ?', [tenant, kind]))
      await db.run(
        'INSERT INTO preset_defaults (tenant, kind, names) VALUES (?, ?, ?) ON CONFLICT (tenant, kind) DO UPDATE SET names = excluded.names',
        [tenant, kind, JSON.stringify(names)]
      )
    },
  }
}
