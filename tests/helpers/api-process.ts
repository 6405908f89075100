/** The API as a child process (`bun services/api/main.ts`), for tests that need more than one, kill one, or its RSS. */
import { join } from 'node:path'
import { ServiceProcess } from './service-process.ts'

const main = join(import.meta.dir, '../../services/api/main.ts')

/** Starts the API with `env` and resolves once it says it listens. */
export async function spawnApi(env: Record<string, string>): Promise<ServiceProcess> {
  const api = new ServiceProcess('api', ['bun', main], env, /listening/)
  await api.start()
  return api
}
