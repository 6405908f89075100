/** The API as a child process (`bun services/api/main.ts`), for tests that need more than one or kill one. */
import { join } from 'node:path'

const main = join(import.meta.dir, '../../services/api/main.ts')

/** Starts the API with `env` and resolves once it says it listens (its first lines may say other things). */
export async function spawnApi(env: Record<string, string>) {
  const child = Bun.spawn(['bun', main], { env: { PATH: process.env.PATH!, ...env }, stdout: 'pipe', stderr: 'inherit' })
  const reader = child.stdout.getReader()
  let said = ''
  while (!said.includes('listening')) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`the API exited before listening: ${said}`)
    said += new TextDecoder().decode(value)
  }
  reader.releaseLock()
  return child
}
