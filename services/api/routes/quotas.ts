/**
 * Tenants' quotas: operators set them (`/v1/admin/tenants/:tenant/quota`, behind ADMIN_TOKEN), and a tenant sees
 * where it stands (`/v1/usage`, with its API key). Uploads past a quota are refused in uploads/quota.ts.
 */
import { Hono } from 'hono'
import * as v from 'valibot'
import type { Caller, Keyed } from '../auth/access.ts'
import { adminGuard } from '../auth/admin.ts'
import { TenantSchema } from '../auth/keys.ts'
import { ApiError } from '../http/errors.ts'
import { ADMIN_TOKEN, API_KEY, documenter, jsonAnswer } from '../http/openapi.ts'
import { json, param } from '../http/validate.ts'
import type { QuotaRepo } from '../store/quotas.ts'

const LIMIT_RULE = 'must be a whole number of at least 0, or null for no limit'
const limit = (what: string) =>
  v.optional(
    v.nullable(v.pipe(v.number(LIMIT_RULE), v.integer(LIMIT_RULE), v.minValue(0, LIMIT_RULE), v.description(what))),
    null
  )
const QuotaSchema = v.pipe(
  v.strictObject({
    storedBytes: limit("The bytes of the tenant's originals (what it uploaded); null or absent: no limit."),
    media: limit('How many media the tenant may have; null or absent: no limit.'),
    waitingJobs: limit('How many of its jobs may wait for a processor at once; null or absent: no limit.'),
  }),
  v.metadata({ ref: 'Quota' })
)
const UsageSchema = v.pipe(
  v.object({
    storedBytes: v.pipe(v.number(), v.description("The bytes of the tenant's originals.")),
    media: v.number(),
    waitingJobs: v.pipe(v.number(), v.description('Its jobs queued and not yet taken by a processor.')),
  }),
  v.metadata({ ref: 'Usage' })
)
const StandingSchema = v.object({
  tenant: v.string(),
  quota: v.pipe(v.nullable(QuotaSchema), v.description('null: no quota (no limits).')),
  usage: UsageSchema,
})
type Standing = v.InferOutput<typeof StandingSchema>
const TenantParams = v.object({ tenant: TenantSchema })

export interface QuotaRouteDeps {
  adminToken: string | null
  quotas: QuotaRepo
}

async function standing(quotas: QuotaRepo, tenant: string): Promise<Standing> {
  return { tenant, quota: await quotas.get(tenant), usage: await quotas.usage(tenant) }
}

const adminDoc = documenter({ tag: 'admin', security: ADMIN_TOKEN, errors: [400, 401, 404] })
const usageDoc = documenter({ tag: 'usage', security: API_KEY, errors: [401, 429] })

/** `/v1/admin/tenants`: a tenant's quota, set, read and removed by operators. */
export function tenantQuotaRoutes(deps: QuotaRouteDeps) {
  return new Hono()
    .use('*', adminGuard(deps.adminToken))
    .put('/:tenant/quota', setDoc, param(TenantParams), json(QuotaSchema), async (c) => {
      const { tenant } = c.req.valid('param')
      await deps.quotas.set(tenant, c.req.valid('json'))
      return c.json((await standing(deps.quotas, tenant)) satisfies Standing, 200)
    })
    .get('/:tenant/quota', getDoc, param(TenantParams), async (c) =>
      c.json((await standing(deps.quotas, c.req.valid('param').tenant)) satisfies Standing, 200)
    )
    .delete('/:tenant/quota', removeDoc, param(TenantParams), async (c) => {
      const { tenant } = c.req.valid('param')
      if (!(await deps.quotas.remove(tenant))) throw new ApiError(404, 'not_found', `tenant ${tenant} has no quota`)
      return c.body(null, 204)
    })
}

/** `/v1/usage`: the caller's tenant, its quota and where it stands. */
export function usageRoutes(deps: QuotaRouteDeps, keyed: Keyed) {
  return new Hono<Caller>()
    .use('*', keyed)
    .get('/', ownDoc, async (c) => c.json((await standing(deps.quotas, c.get('tenant'))) satisfies Standing, 200))
}

const setDoc = adminDoc({
  operationId: 'setQuota',
  summary: "Set a tenant's quota",
  description:
    'Replaces the whole quota (a limit left out is no limit). From the next upload on, an upload past a limit gets 403 `quota_exceeded`, on every way in, before a byte is stored.',
  responses: { 200: jsonAnswer('The quota and where the tenant stands.', StandingSchema) },
})
const getDoc = adminDoc({
  operationId: 'getQuota',
  summary: "A tenant's quota and usage",
  responses: { 200: jsonAnswer('The quota (null: none) and where the tenant stands.', StandingSchema) },
})
const removeDoc = adminDoc({
  operationId: 'removeQuota',
  summary: "Remove a tenant's quota (no limits)",
  responses: { 204: { description: 'Removed.' } },
})
const ownDoc = usageDoc({
  operationId: 'getUsage',
  summary: "The caller's tenant: its quota and usage",
  responses: { 200: jsonAnswer('The quota (null: none) and where the tenant stands.', StandingSchema) },
})
