/**
 * JSON Schemas (draft-07) of every message between backends and processors, generated from the valibot schemas
 * with @valibot/to-json-schema, for backends in other languages. `generate.ts` writes them to `shared/schemas/`.
 * What JSON Schema cannot say (names unique within a list) is in the `description` beside it, and in PROTOCOL.md.
 */
import { toJsonSchema, type JsonSchema } from '@valibot/to-json-schema'
import type * as v from 'valibot'
import {
  AudioRequestSchema,
  AudioResultSchema,
  CancelSchema,
  ImageRequestSchema,
  ImageResultSchema,
  JobUpdateSchema,
  VideoRequestSchema,
  VideoResultSchema,
} from '../messages.ts'

export interface MessageDoc {
  /** File stem under shared/schemas/, and the message's name in the AsyncAPI document. */
  file: string
  title: string
  description: string
  schema: v.GenericSchema
}

export const MESSAGE_DOCS: MessageDoc[] = [
  {
    file: 'image-request',
    title: 'ImageRequest',
    schema: ImageRequestSchema,
    description:
      'An image job: backend to processor on <system>.media.images.request (interactive) or <system>.media.images.bulk.',
  },
  {
    file: 'video-request',
    title: 'VideoRequest',
    schema: VideoRequestSchema,
    description:
      'A video job: backend to processor on <system>.media.videos.request (interactive) or <system>.media.videos.bulk.',
  },
  {
    file: 'audio-request',
    title: 'AudioRequest',
    schema: AudioRequestSchema,
    description:
      'An audio job: backend to processor on <system>.media.audio.request (interactive) or <system>.media.audio.bulk.',
  },
  {
    file: 'job-update',
    title: 'JobUpdate',
    schema: JobUpdateSchema,
    description:
      'Progress of a job: processor to backend on <system>.media.<type>.updates. Advisory; the result decides.',
  },
  {
    file: 'image-result',
    title: 'ImageResult',
    schema: ImageResultSchema,
    description: 'The outcome of an image job: processor to backend on <system>.media.images.results.',
  },
  {
    file: 'video-result',
    title: 'VideoResult',
    schema: VideoResultSchema,
    description: 'The outcome of a video job: processor to backend on <system>.media.videos.results.',
  },
  {
    file: 'audio-result',
    title: 'AudioResult',
    schema: AudioResultSchema,
    description: 'The outcome of an audio job: processor to backend on <system>.media.audio.results.',
  },
  {
    file: 'cancel',
    title: 'Cancel',
    schema: CancelSchema,
    description: 'Stop a job: backend to every processor on the fanout exchange <system>.media.cancel.',
  },
]

/** What JSON Schema's `format: uuid` means, written out: valibot takes either case. */
const UUID_PATTERN = '^[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$'

export function toMessageJsonSchema(doc: MessageDoc): JsonSchema {
  const converted = toJsonSchema(doc.schema, {
    target: 'draft-07',
    errorMode: 'throw',
    overrideAction({ valibotAction, jsonSchema }) {
      if (valibotAction.type === 'uuid') return { ...jsonSchema, pattern: UUID_PATTERN }
      // A custom check (unique names, how an output's fields go together) has no JSON Schema form: its rule is in
      // the description beside it, and in PROTOCOL.md.
      if (valibotAction.type === 'check' || valibotAction.type === 'raw_check') return jsonSchema
      return undefined
    },
  })
  const { $schema, ...rest } = converted
  return { $schema, title: doc.title, description: doc.description, ...rest }
}
