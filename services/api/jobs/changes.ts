/**
 * Media changes, for the Server-Sent Events of `/v1/media/:id/events`. The store announces every change it commits
 * (store/open.ts `onMediaChanged`): this passes it to this instance's watchers at once, and over the broker's
 * events fanout to the other instances, and only to them (each ignores its own broadcasts), so a watcher here never
 * waits on the broker for what happened here. No caller announces anything: a change that commits is announced.
 */
import type { Store } from '../store/open.ts'

export interface Changes {
  /** A media changed on another instance (the broker heard it on the fanout). */
  heard(mediaId: string): void
  /** Calls `listener` on every change of the media until the returned function is called. */
  watch(mediaId: string, listener: () => void): () => void
  /** Stops passing this store's changes on. */
  close(): void
}

/** `broadcast`: tells the other instances (best effort: SSE clients also re-read on a heartbeat). */
export function createChanges(store: Pick<Store, 'onMediaChanged'>, broadcast: (mediaId: string) => void): Changes {
  /** One event type per media id. */
  const changes = new EventTarget()
  const dispatch = (mediaId: string) => void changes.dispatchEvent(new Event(mediaId))
  const unsubscribe = store.onMediaChanged((mediaId) => {
    dispatch(mediaId)
    broadcast(mediaId)
  })
  return {
    heard: dispatch,
    watch(mediaId, listener) {
      changes.addEventListener(mediaId, listener)
      return () => changes.removeEventListener(mediaId, listener)
    },
    close: unsubscribe,
  }
}
