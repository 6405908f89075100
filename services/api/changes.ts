/**
 * Media changes, for the Server-Sent Events of `/v1/media/:id/events`. A change this instance applied reaches its
 * own watchers at once; the events fanout carries it to the other instances, and only to them (each ignores its
 * own broadcasts), so a watcher here never waits on the broker for what happened here.
 */
import type { Broker } from './broker.ts'

export interface Changes {
  /** A media changed here: tells this instance's watchers now, and the other instances over the broker. */
  announce(mediaId: string): void
  /** A media changed on another instance (the broker heard it on the fanout). */
  heard(mediaId: string): void
  /** Calls `listener` on every change of the media until the returned function is called. */
  watch(mediaId: string, listener: () => void): () => void
}

export function createChanges(broker: Pick<Broker, 'announce'>): Changes {
  /** One event type per media id. */
  const changes = new EventTarget()
  const dispatch = (mediaId: string) => void changes.dispatchEvent(new Event(mediaId))
  return {
    announce(mediaId) {
      dispatch(mediaId)
      broker.announce(mediaId)
    },
    heard: dispatch,
    watch(mediaId, listener) {
      changes.addEventListener(mediaId, listener)
      return () => changes.removeEventListener(mediaId, listener)
    },
  }
}
