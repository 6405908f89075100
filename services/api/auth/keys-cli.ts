/**
 * `bun run keys`: API keys from the command line, straight on the database (DATABASE_URL / DATA_DIR, as the API
 * reads them). A revoked key stops working on the next request of every API instance.
 *
 *   bun run keys create <tenant> [name] [--bulk]   prints the new key (shown this once; only its hash is kept);
 *                                                   --bulk: its uploads are bulk work (docs/scheduling.md)
 *   bun run keys list [tenant]
 *   bun run keys revoke <key id>
 */
import * as v from 'valibot'
import { readDatabaseConfig } from '../config.ts'
import { TenantSchema, issueKey } from './keys.ts'
import { openStore } from '../store/open.ts'

const USAGE = 'usage: bun run keys create <tenant> [name] [--bulk] | list [tenant] | revoke <key id>'

async function main(given: string[]): Promise<number> {
  const bulk = given.includes('--bulk')
  const [command, argument, name] = given.filter((arg) => arg !== '--bulk')
  const tenant = (value: string | undefined) => {
    const parsed = v.safeParse(TenantSchema, value)
    if (!parsed.success) throw new Error(`the tenant ${JSON.stringify(value ?? '')} ${parsed.issues[0].message}`)
    return parsed.output
  }
  if (!['create', 'list', 'revoke'].includes(command ?? '')) throw new Error(USAGE)
  const store = await openStore(readDatabaseConfig(process.env).database)
  try {
    if (command === 'create') {
      const { key, record } = await issueKey(store, tenant(argument), {
        name: name ?? null,
        priority: bulk ? 'bulk' : 'interactive',
      })
      console.log(
        `created ${record.priority} key ${record.id} for tenant ${record.tenant} (shown this once; only its hash is kept):\n${key}`
      )
    } else if (command === 'list') {
      const keys = await store.keys.list(argument === undefined ? undefined : tenant(argument))
      for (const k of keys)
        console.log(
          [
            k.id,
            k.tenant,
            `${k.prefix}…`,
            k.createdAt,
            k.revokedAt ? `revoked ${k.revokedAt}` : 'active',
            k.priority,
            k.name ?? '',
          ].join('\t')
        )
      if (!keys.length) console.log('no keys')
    } else {
      if (!argument || !v.is(v.pipe(v.string(), v.uuid()), argument))
        throw new Error(`revoke needs a key id (a UUID, from \`bun run keys list\`)\n${USAGE}`)
      const key = await store.keys.revoke(argument)
      if (!key) throw new Error(`no key with id ${argument}`)
      console.log(`revoked key ${key.id} of tenant ${key.tenant} (${key.prefix}…) at ${key.revokedAt}`)
    }
  } finally {
    await store.close()
  }
  return 0
}

if (import.meta.main) {
  try {
    process.exit(await main(process.argv.slice(2)))
  } catch (error) {
    console.error(`keys: ${(error as Error).message}`)
    process.exit(2)
  }
}
