/**
 * The API as a child process (`bun services/api/main.ts`, or on Deno), for tests that need more than one, kill one,
 * its RSS, or another runtime.
 */
import { join } from 'node:path'
import { ServiceProcess, runtimePath, type Runtime } from './service-process.ts'

const main = join(import.meta.dir, '../../services/api/main.ts')

/**
 * The least the API needs from Deno's permissions (docs/scale.md, "Deno"): the environment (its config, and the AWS SDK
 * reads AWS_* variables), the network (broker, S3, PostgreSQL, its port), the OS release (the AWS SDK's user agent
 * asks for it) and its data directory (the SQLite file). npm packages in node_modules need no read permission.
 */
export function denoApiPermissions(dataDir: string): string[] {
  return [
    '--allow-env',
    '--allow-net',
    '--allow-sys=osRelease,hostname',
    `--allow-read=${dataDir}`,
    `--allow-write=${dataDir}`,
  ]
}

/** The command that runs the API on `runtime` with `env`. */
export function apiArgv(runtime: Runtime, env: Record<string, string>): string[] {
  if (runtime === 'bun') return ['bun', main]
  return [runtimePath('deno'), 'run', ...denoApiPermissions(env.DATA_DIR ?? '.data'), main]
}

/** Starts the API with `env` (on Bun unless told) and resolves once it says it listens. */
export async function spawnApi(
  env: Record<string, string>,
  options: { runtime?: Runtime } = {}
): Promise<ServiceProcess> {
  const runtime = options.runtime ?? 'bun'
  // Deno colours its errors even into a pipe; the log is read by people and regexes.
  const childEnv = runtime === 'deno' ? { NO_COLOR: '1', ...env } : env
  const api = new ServiceProcess(
    runtime === 'bun' ? 'api' : `api-${runtime}`,
    apiArgv(runtime, env),
    childEnv,
    /listening/
  )
  await api.start()
  return api
}
