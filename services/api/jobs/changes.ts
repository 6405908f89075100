/**
 * Media changes, for the event streams (`/v1/media/:id/events`, `/v1/events`, `/v1/ws`). The store announces every
 * change it commits with its tenant and its number in the tenant's event log (store/open.ts `onMediaChanged`): this
 * passes it to this instance's watchers at once, and over the broker's events fanout to the other instances, and
 * only to them (each ignores its own broadcasts), so a watcher here never waits on the broker for what happened
 * here. No caller announces anything: a change that commits is announced.
 */
import type { MediaChange } from '../store/jobs.ts'
import type { Store } from '../store/open.ts'

/** A change as heard: from another instance, the tenant and number may be missing (an older instance's broadcast). */
export type HeardChange = Pick<MediaChange, 'mediaId'> & Partial<MediaChange>

export interface Changes {
  /** A media changed on another instance (the broker heard it on the fanout). */
  heard(change: HeardChange): void
  /** Calls `listener` on every change of the media until the returned function is called. */
  watch(mediaId: string, listener: () => void): () => void
  /** Calls `listener` with the event number of every change of the tenant's media, until the returned function is called. */
  watchTenant(tenant: string, listener: (seq: number) => void): () => void
  /** Stops passing this store's changes on. */
  close(): void
}

/** `broadcast`: tells the other instances (best effort: streams also re-read on a heartbeat). */
export function createChanges(store: Pick<Store, 'onMediaChanged'>, broadcast: (change: MediaChange) => void): Changes {
  /** One event type per media id, and one per tenant (prefixed, so that neither can pass for the other). */
  const changes = new EventTarget()
  const dispatch = (change: HeardChange) => {
    changes.dispatchEvent(new Event(change.mediaId))
    if (change.tenant !== undefined && change.seq !== undefined)
      changes.dispatchEvent(new CustomEvent(`tenant:${change.tenant}`, { detail: change.seq }))
  }
  const unsubscribe = store.onMediaChanged((change) => {
    dispatch(change)
    broadcast(change)
  })
  return {
    heard: dispatch,
    watch(mediaId, listener) {
      changes.addEventListener(mediaId, listener)
      return () => changes.removeEventListener(mediaId, listener)
    },
    watchTenant(tenant, listener) {
      const onEvent = (event: Event) => listener((event as CustomEvent<number>).detail)
      changes.addEventListener(`tenant:${tenant}`, onEvent)
      return () => changes.removeEventListener(`tenant:${tenant}`, onEvent)
    },
    close: unsubscribe,
  }
}
