/**
 * `/v1/presets`: the presets a tenant may upload with (uploads/presets.ts): the built-in ones and its own, which it
 * creates, reads, replaces and deletes; and its defaults, the presets an upload that names none is made with. A
 * tenant sees and uses only its own presets (another tenant's name is as unknown as one never made).
 */
import { Hono } from 'hono'
import * as v from 'valibot'
import { MEDIA_KIND_LIST } from '@app/shared'
import type { Caller, Keyed } from '../auth/access.ts'
import { ApiError } from '../http/errors.ts'
import { API_KEY, documenter, jsonAnswer } from '../http/openapi.ts'
import { json, param } from '../http/validate.ts'
import type { PresetKind, PresetRepo } from '../store/presets.ts'
import {
  BUILT_IN_DEFAULTS,
  BUILT_IN_PRESETS,
  PresetArraySchema,
  PresetDefinitionSchema,
  PresetNameSchema,
  checkDefinition,
  type PresetDefinition,
  type Presets,
} from '../uploads/presets.ts'

const NameParams = v.object({ name: PresetNameSchema })
const NewPresetSchema = v.intersect([v.object({ name: PresetNameSchema }), PresetDefinitionSchema])
const PresetSchema = v.pipe(
  v.intersect([
    v.object({
      name: PresetNameSchema,
      builtIn: v.pipe(v.boolean(), v.description('A built-in preset: every tenant has it, and none can change it.')),
      createdAt: v.nullable(v.string()),
      updatedAt: v.nullable(v.string()),
    }),
    PresetDefinitionSchema,
  ]),
  v.metadata({ ref: 'Preset' })
)
const DefaultsSchema = v.object({
  image: v.pipe(v.array(PresetNameSchema), v.description('What an image upload that names no preset is made with.')),
  video: v.pipe(v.array(PresetNameSchema), v.description('What a video upload that names no preset is made with.')),
  audio: v.pipe(v.array(PresetNameSchema), v.description('What a sound upload that names no preset is made with.')),
})
const DefaultsBody = v.object({
  image: v.optional(v.nullable(PresetArraySchema)),
  video: v.optional(v.nullable(PresetArraySchema)),
  audio: v.optional(v.nullable(PresetArraySchema)),
})
/** The kinds whose media take one preset at a time (a video's rungs, a sound's encodings); images take several. */
const ONE_PRESET: readonly PresetKind[] = ['video', 'audio']
type Preset = v.InferOutput<typeof PresetSchema>

const doc = documenter({ tag: 'presets', security: API_KEY, errors: [401, 429] })

export interface PresetRouteDeps {
  presets: Presets
  /** The tenants' own presets and defaults. */
  presetStore: PresetRepo
}

export function presetRoutes(deps: PresetRouteDeps, keyed: Keyed) {
  const { presetStore } = deps
  const builtIn = (name: string): Preset => ({
    name,
    builtIn: true,
    createdAt: null,
    updatedAt: null,
    ...BUILT_IN_PRESETS[name]!,
  })
  /** The caller's preset of that name (its own, or a built-in); 404 otherwise. */
  const find = async (tenant: string, name: string): Promise<Preset> => {
    if (Object.hasOwn(BUILT_IN_PRESETS, name)) return builtIn(name)
    const own = await presetStore.get(tenant, name)
    if (!own) throw new ApiError(404, 'not_found', `no preset named ${name}`)
    return {
      name,
      builtIn: false,
      createdAt: own.createdAt,
      updatedAt: own.updatedAt,
      ...(own.definition as PresetDefinition),
    }
  }
  /** Stores a tenant's preset after the checks its schema cannot make. */
  const save = async (tenant: string, name: string, definition: PresetDefinition): Promise<boolean> => {
    if (Object.hasOwn(BUILT_IN_PRESETS, name))
      throw new ApiError(409, 'conflict', `${name} is a built-in preset; choose another name`)
    checkDefinition(name, definition)
    const defaults = await presetStore.defaults(tenant)
    const other = MEDIA_KIND_LIST.find((kind) => kind !== definition.kind && defaults[kind]?.includes(name))
    if (other) throw new ApiError(409, 'conflict', `${name} is among the ${other} defaults: it stays a ${other} preset`)
    return presetStore.put({ tenant, name, kind: definition.kind, definition })
  }
  /** The tenant's defaults, the built-in ones where it set none. */
  const defaultsOf = async (tenant: string) =>
    ({ ...BUILT_IN_DEFAULTS, ...(await presetStore.defaults(tenant)) }) as v.InferOutput<typeof DefaultsSchema>

  return (
    new Hono<Caller>()
      .use('*', keyed)

      .get('/', listDoc, async (c) => {
        const own = await presetStore.list(c.get('tenant'))
        const presets: Preset[] = [
          ...Object.keys(BUILT_IN_PRESETS).map(builtIn),
          ...own.map((p) => ({
            name: p.name,
            builtIn: false,
            createdAt: p.createdAt,
            updatedAt: p.updatedAt,
            ...(p.definition as PresetDefinition),
          })),
        ]
        return c.json({ presets, defaults: await defaultsOf(c.get('tenant')) }, 200)
      })

      .get('/defaults', getDefaultsDoc, async (c) => c.json(await defaultsOf(c.get('tenant')), 200))

      /** Sets the defaults of a kind (null: the built-in ones again); each name must be a preset of that kind. */
      .put('/defaults', putDefaultsDoc, json(DefaultsBody), async (c) => {
        const tenant = c.get('tenant')
        const body = c.req.valid('json')
        const available = await deps.presets.available(tenant)
        for (const kind of MEDIA_KIND_LIST) {
          const names = body[kind]
          if (names === undefined) continue
          const wrong = (names ?? []).filter((n) => available.get(n)?.kind !== kind)
          if (wrong.length) throw new ApiError(422, 'unknown_preset', `no ${kind} preset named ${wrong.join(', ')}`)
          if (ONE_PRESET.includes(kind) && names && names.length > 1)
            throw new ApiError(422, 'invalid_preset', `${kind} takes one preset: name one default`)
        }
        for (const kind of MEDIA_KIND_LIST)
          if (body[kind] !== undefined) await presetStore.setDefaults(tenant, kind, body[kind] ?? null)
        return c.json(await defaultsOf(tenant), 200)
      })

      .post('/', createDoc, json(NewPresetSchema), async (c) => {
        const { name, ...definition } = c.req.valid('json')
        if (await presetStore.get(c.get('tenant'), name))
          throw new ApiError(409, 'conflict', `a preset named ${name} exists; replace it with PUT /v1/presets/${name}`)
        await save(c.get('tenant'), name, definition as PresetDefinition)
        c.header('Location', `/v1/presets/${name}`)
        return c.json(await find(c.get('tenant'), name), 201)
      })

      .get('/:name', getDoc, param(NameParams, 404), async (c) =>
        c.json(await find(c.get('tenant'), c.req.valid('param').name), 200)
      )

      /** Creates or replaces a preset: jobs already queued keep what they were made with. */
      .put('/:name', putDoc, param(NameParams, 404), json(PresetDefinitionSchema), async (c) => {
        const { name } = c.req.valid('param')
        const created = await save(c.get('tenant'), name, c.req.valid('json'))
        return c.json(await find(c.get('tenant'), name), created ? 201 : 200)
      })

      .delete('/:name', deleteDoc, param(NameParams, 404), async (c) => {
        const tenant = c.get('tenant')
        const { name } = c.req.valid('param')
        if (Object.hasOwn(BUILT_IN_PRESETS, name))
          throw new ApiError(409, 'conflict', `${name} is a built-in preset; it cannot be deleted`)
        const defaults = await presetStore.defaults(tenant)
        const kind = MEDIA_KIND_LIST.find((k) => defaults[k]?.includes(name))
        if (kind)
          throw new ApiError(
            409,
            'conflict',
            `${name} is among the ${kind} defaults; change them first (PUT /v1/presets/defaults)`
          )
        if (!(await presetStore.remove(tenant, name))) throw new ApiError(404, 'not_found', `no preset named ${name}`)
        return c.body(null, 204)
      })
  )
}

const PresetListSchema = v.object({ presets: v.array(PresetSchema), defaults: DefaultsSchema })
const DEFINITION =
  'An image preset lists `outputs`, each with a `format` (webp, jpeg, png, avif), a box (`width`, `height`) or a responsive set (`widths`, one output per width named <name>-<width>), and optionally `fit` (inside, cover, contain), `position` (centre, attention, entropy; cover only), `quality`, `effort` (avif), `enlarge`, `animated` (webp) and `name` (a one-output preset names its output after itself). A video preset lists `renditions` (short sides, named <height>p) and a `poster` box.'

const listDoc = doc({
  operationId: 'listPresets',
  summary: 'The presets this tenant may upload with (built-in and its own), and its defaults',
  responses: { 200: jsonAnswer('Every preset, built-in first.', PresetListSchema) },
})
const getDefaultsDoc = doc({
  operationId: 'getPresetDefaults',
  summary: 'What an upload that names no preset is made with, by kind',
  responses: { 200: jsonAnswer('The defaults (the built-in ones where the tenant set none).', DefaultsSchema) },
})
const putDefaultsDoc = doc({
  operationId: 'setPresetDefaults',
  summary: 'Set the defaults of a kind (null: the built-in ones again)',
  responses: { 200: jsonAnswer('The defaults now.', DefaultsSchema) },
  errors: [400, 422],
})
const createDoc = doc({
  operationId: 'createPreset',
  summary: 'Create a preset',
  description: DEFINITION,
  responses: { 201: jsonAnswer('The preset.', PresetSchema) },
  errors: [400, 409, 422],
})
const getDoc = doc({
  operationId: 'getPreset',
  summary: 'One preset',
  responses: { 200: jsonAnswer('The preset.', PresetSchema) },
  errors: [404],
})
const putDoc = doc({
  operationId: 'putPreset',
  summary: 'Create or replace a preset (jobs already queued keep what they were made with)',
  description: DEFINITION,
  responses: { 200: jsonAnswer('Replaced.', PresetSchema), 201: jsonAnswer('Created.', PresetSchema) },
  errors: [400, 404, 409, 422],
})
const deleteDoc = doc({
  operationId: 'deletePreset',
  summary: 'Delete a preset (not one of the defaults, nor a built-in one)',
  responses: { 204: { description: 'Deleted.' } },
  errors: [404, 409],
})
