/**
 * Queue and exchange names, all derived from the deployment namespace (`SYSTEM`), so several deployments can share
 * one RabbitMQ without seeing each other's messages.
 */
import * as v from 'valibot'

/** The kinds of work a processor owns; each has its own queues. */
export const MEDIA_TYPES = ['images', 'videos', 'audio'] as const
export type MediaType = (typeof MEDIA_TYPES)[number]
/** The kind of media each type's processors handle: how uploads, job bodies and metric labels name it. */
export const MEDIA_KINDS = { images: 'image', videos: 'video', audio: 'audio' } as const satisfies Record<
  MediaType,
  string
>
export type MediaKind = (typeof MEDIA_KINDS)[MediaType]
/** Every kind, in the order of their types. */
export const MEDIA_KIND_LIST = MEDIA_TYPES.map((type) => MEDIA_KINDS[type]) as readonly MediaKind[]
/** The type whose processors handle media of `kind`. */
export const typeOfKind = (kind: MediaKind): MediaType =>
  MEDIA_TYPES.find((type) => MEDIA_KINDS[type] === kind) as MediaType

/** A namespace is one lowercase word (dots would blur the `<system>.media.<type>` structure). */
export const SystemSchema = v.pipe(
  v.string(),
  v.regex(
    /^[a-z0-9][a-z0-9_-]{0,62}$/,
    'must be 1-63 characters of a-z, 0-9, "_" or "-", starting with a letter or digit'
  )
)

export interface QueueNames {
  /** Interactive work for the processor (uploads a person waits for): one message per job. */
  request: string
  /** Bulk work (reprocessing, re-drives, a flood from one tenant): the same requests, taken after interactive ones. */
  bulk: string
  /** Progress and status changes, processor to backend. */
  updates: string
  /** The final outcome of a job, processor to backend. */
  results: string
  /** Messages that could not be processed (malformed, or over the delivery limit). */
  dead: string
}

/** `<system>.media.<type>.{request,bulk,updates,results,dead}` */
export function queueNames(system: string, type: MediaType): QueueNames {
  const base = `${system}.media.${type}`
  return {
    request: `${base}.request`,
    bulk: `${base}.bulk`,
    updates: `${base}.updates`,
    results: `${base}.results`,
    dead: `${base}.dead`,
  }
}

/**
 * The two classes of work. Interactive: someone is waiting for it (an upload, by default). Bulk: throughput work
 * (reprocessing, re-drives, a tenant past its fair share of waiting jobs, bulk keys), which a processor never lets
 * take its last free slot and which waits whenever interactive work is ready.
 */
export const JOB_CLASSES = ['interactive', 'bulk'] as const
export type JobClass = (typeof JOB_CLASSES)[number]
export const JobClassSchema = v.picklist(JOB_CLASSES, 'must be "interactive" or "bulk"')

/** The request queue of a class. */
export const requestQueue = (names: QueueNames, cls: JobClass): string => (cls === 'bulk' ? names.bulk : names.request)

/** The class of a request queue's messages, by its name (`queueNames`' `.bulk`). */
export const classOfQueue = (queue: string): JobClass => (queue.endsWith('.bulk') ? 'bulk' : 'interactive')

/** The other class's request queue of the same type, given either one's name. */
export const queueOfClass = (queue: string, cls: JobClass): string =>
  `${queue.replace(/\.(request|bulk)$/, '')}.${cls === 'bulk' ? 'bulk' : 'request'}`

/**
 * The AMQP `priority` property of a request of each class. RabbitMQ 3.x's quorum queues ignore it (the two queues
 * do the work); RabbitMQ 4's treat priorities above 4 as high, so a deployment routing both classes into one
 * quorum queue there would still serve interactive first.
 */
export const CLASS_PRIORITY = { interactive: 5, bulk: 0 } as const satisfies Record<JobClass, number>

/** `<system>.media.dead-letter`: the exchange every queue of the namespace dead-letters into. */
export function deadLetterExchange(system: string): string {
  return `${system}.media.dead-letter`
}

/** `<system>.media.cancel`: a durable fanout; every processor instance binds a queue of its own and hears every cancel. */
export function cancelExchange(system: string): string {
  return `${system}.media.cancel`
}

/** `<system>.media.events`: a fanout between backend instances, so a change one applies reaches clients of another. */
export function eventsExchange(system: string): string {
  return `${system}.media.events`
}

/**
 * The key of a job's cancel marker: an empty object the backend writes beside the job's outputs before it
 * broadcasts a cancel. A processor that missed the broadcast (it was disconnected, or started later) finds it.
 */
export function cancelMarkerKey(outputPrefix: string): string {
  return `${outputPrefix}/.cancelled`
}
