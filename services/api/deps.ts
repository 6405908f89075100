/**
 * What the HTTP app is built from (`createApp(deps)`): the parts start.ts wires. Each route factory declares the
 * part of this it uses (routes/*.ts `…RouteDeps`), and takes no more.
 */
import type { Logger, Registry } from '@app/shared/ops'
import type { ConsoleFiles } from './adapter/console-build.ts'
import type { AuthMode } from './auth/access.ts'
import type { Broker } from './jobs/broker.ts'
import type { Outbox } from './jobs/outbox.ts'
import type { ApiMetrics } from './metrics.ts'
import type { Objects } from './s3/objects.ts'
import type { AdminRouteDeps } from './routes/admin.ts'
import type { DirectRouteDeps } from './routes/direct.ts'
import type { EventRouteDeps } from './routes/events.ts'
import type { HealthDeps } from './routes/health.ts'
import type { LinkRouteDeps } from './routes/links.ts'
import type { MediaRouteDeps } from './routes/media.ts'
import type { PresetRouteDeps } from './routes/presets.ts'
import type { WebhookRouteDeps } from './routes/webhooks.ts'
import type { Store } from './store/open.ts'
import type { PaceRule } from './uploads/pace.ts'
import type { Tus } from './uploads/tus.ts'

export interface AppDeps
  extends MediaRouteDeps,
    DirectRouteDeps,
    AdminRouteDeps,
    HealthDeps,
    WebhookRouteDeps,
    PresetRouteDeps,
    EventRouteDeps,
    Pick<LinkRouteDeps, 'segmentStore'> {
  store: Store
  objects: Objects
  broker: Broker
  outbox: Outbox
  metrics: ApiMetrics
  /** Per key: requests a minute (0: none), uploads in flight, and how slow an upload may be. */
  limits: { requestsPerMinute: number; concurrentUploads: number; pace: PaceRule }
  /** Origins a browser may call from; empty: CORS closed. */
  corsOrigins: readonly string[]
  /** `keys`: every media route needs an API key; `none`: open, as the tenant `default` (reported by /health). */
  auth: AuthMode
  log: Logger
  registry: Registry
  /** Resumable uploads (tus). */
  tus: Tus
  /** The web console's files (adapter/console-build.ts), built when first asked for. */
  console: () => Promise<ConsoleFiles>
}
