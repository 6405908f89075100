/**
 * No import cycle anywhere in the repository, type-only imports included: a cycle is two files that each need the
 * other to be read, which is where a layered design stops being one. Imports are read from the source text (the
 * transpiler drops type-only ones), relative paths and the shared package's entry points alike.
 */
import { expect, test } from 'bun:test'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'

const ROOT = resolve(import.meta.dir, '../..')
const SHARED_EXPORTS = JSON.parse(readFileSync(join(ROOT, 'shared/package.json'), 'utf8')).exports as Record<
  string,
  string
>

/** Every TypeScript file git knows of (tracked, or new and not ignored). */
function sourceFiles(): string[] {
  const listed = Bun.spawnSync(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '*.ts'], { cwd: ROOT })
  return new TextDecoder()
    .decode(listed.stdout)
    .split('\n')
    .filter((path) => path && !path.includes('node_modules/') && existsSync(join(ROOT, path)))
}

/** The repository files a file imports (static, `import type`, re-exports, dynamic), as repository paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8')
  const specifiers = [
    ...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g),
  ].map((m) => m[1] ?? m[2]!)
  const targets: string[] = []
  for (const specifier of specifiers) {
    let target: string | undefined
    if (specifier.startsWith('.')) target = relative(ROOT, resolve(ROOT, dirname(file), specifier))
    else if (specifier === '@app/shared' || specifier.startsWith('@app/shared/')) {
      const entry = SHARED_EXPORTS[`.${specifier.slice('@app/shared'.length)}`]
      if (entry) target = join('shared', entry)
    }
    if (target && existsSync(join(ROOT, target))) targets.push(target)
  }
  return targets
}

/** The cycles of the graph: one path each, found by a depth-first search that reports each back edge. */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = []
  const state = new Map<string, 'open' | 'done'>()
  const path: string[] = []
  const visit = (file: string) => {
    state.set(file, 'open')
    path.push(file)
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') found.push([...path.slice(path.indexOf(next)), next])
      else if (!state.has(next)) visit(next)
    }
    path.pop()
    state.set(file, 'done')
  }
  for (const file of [...graph.keys()].sort()) if (!state.has(file)) visit(file)
  return found
}

test('no file imports itself, directly or through others (type-only imports included)', () => {
  const files = sourceFiles()
  expect(files.length).toBeGreaterThan(100)
  const graph = new Map(files.map((file) => [file, importsOf(file)]))
  // The reader sees imports: the API's app imports its routes, for one.
  expect(graph.get('services/api/app.ts')).toContain('services/api/routes/media.ts')
  expect(cycles(graph).map((cycle) => cycle.join(' -> '))).toEqual([])
})
