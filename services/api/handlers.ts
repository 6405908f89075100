/**
 * What the API does with what the broker brings: processors' updates and results applied to the store, dead letters
 * kept for operators, and other instances' changes passed to this one's watchers. Every change applied here is
 * announced, so SSE clients of every instance see it.
 */
import type { Handlers } from './broker.ts'
import type { Changes } from './changes.ts'
import { readDeadLetter } from './dead-letters.ts'
import { outputPrefix } from './recipes.ts'
import type { Storage } from './storage.ts'
import type { Store } from './store.ts'

export function createHandlers(deps: { system: string; store: Store; storage: Storage; changes: Changes }): Handlers {
  const { system, store, storage, changes } = deps
  return {
    async onUpdate(_type, update) {
      const applied = await store.applyUpdate(update)
      if (applied?.changed) changes.announce(applied.mediaId)
    },
    async onResult(_type, result) {
      const applied = await store.applyResult(result)
      if (applied?.changed) changes.announce(applied.mediaId)
      // Outputs of a job that was cancelled (or whose media was deleted) before its result came: remove them,
      // so nothing of a cancelled job remains whichever way the race went. Only keys under the job's own prefix:
      // a message never gets to name what else is deleted.
      if (result.status === 'completed' && (!applied || applied.status === 'cancelled')) {
        const prefix = `${outputPrefix(system, result.jobId)}/`
        await Promise.all(result.outputs.filter((o) => o.key.startsWith(prefix)).map((o) => storage.delete(o.key)))
      }
    },
    async onDeadLetter(type, raw) {
      const { letter, failure } = readDeadLetter(type, raw)
      console.error(
        `api: dead letter from ${letter.queue} (${letter.reason}${letter.jobId ? `, job ${letter.jobId}` : ''})` +
          (letter.problem ? `: ${letter.problem}` : '')
      )
      const applied = await store.recordDeadLetter(letter, failure)
      if (applied?.changed) changes.announce(applied.mediaId)
    },
    onMediaChanged: (mediaId) => changes.heard(mediaId),
  }
}
