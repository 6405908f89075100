/**
 * The monitoring files in infra/: the Prometheus config and alert rules pass promtool (config, rules, and the rules'
 * own unit tests), and the Grafana dashboard is current, its queries are valid PromQL, and every metric the rules and
 * the dashboard name is one the services export. promtool comes from Debian's prometheus package (infra/setup.sh).
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'yaml'
import { createRegistry, type Registry } from '@app/shared/ops'
import { processorMetrics } from '../shared/processor/metrics.ts'
import { apiMetrics } from '../services/api/metrics.ts'
import { dashboard } from '../infra/grafana/dashboard.ts'

const infra = join(import.meta.dir, '..', 'infra')

async function promtool(...args: string[]): Promise<string> {
  if (!Bun.which('promtool'))
    throw new Error("promtool is not installed: run `bash infra/setup.sh` (it installs Debian's prometheus package)")
  const child = Bun.spawn(['promtool', ...args], { stdout: 'pipe', stderr: 'pipe' })
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  if (code !== 0) throw new Error(`promtool ${args.join(' ')} exited with ${code}:\n${out}${err}`)
  return out + err
}

/** Every series name the services export: the API's and a processor's registries, histograms with their suffixes. */
function exported(): Set<string> {
  const api = createRegistry('api')
  apiMetrics(api)
  const images = createRegistry('images')
  processorMetrics(
    images,
    'images',
    () => ({ busy: 0, free: 1, waiting: { interactive: 0, bulk: 0 } }),
    async () => true
  )
  const names = new Set<string>(['up'])
  for (const registry of [api, images] as Registry[]) {
    for (const { name, type } of registry.getMetricsAsArray()) {
      names.add(name)
      if (String(type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix)
    }
  }
  return names
}

/** The metric names a PromQL expression reads: ours, prom-client's and Prometheus's `up`. */
function namesIn(expr: string): string[] {
  return [
    ...expr.matchAll(/\b((?:media|process|nodejs)_[a-z0-9_]+|up)\b(?=\s*[{[)]|\s*$|\s*(?:==|>|<|\/|and|or))/g),
  ].map((m) => m[1]!)
}

const rules = parse(readFileSync(join(infra, 'prometheus/alerts.yml'), 'utf8')) as {
  groups: { rules: { alert: string; expr: string }[] }[]
}
const alerts = rules.groups.flatMap((g) => g.rules)
const board = JSON.parse(readFileSync(join(infra, 'grafana/media-pipeline.json'), 'utf8')) as ReturnType<
  typeof dashboard
>
type PanelJson = {
  id: number
  type: string
  title: string
  datasource?: unknown
  gridPos: { x: number; w: number }
  targets?: { expr: string }[]
}
const panels = (board.panels as PanelJson[]).filter((p) => p.type !== 'row')
const queries = panels.flatMap((p) => p.targets ?? []).map((t) => t.expr)

describe('Prometheus', () => {
  test('the config passes promtool, with its rule file', async () => {
    expect(await promtool('check', 'config', join(infra, 'prometheus/prometheus.yml'))).toContain('SUCCESS')
  })

  test('the alert rules pass promtool, and their unit tests pass: each alert fires when it should and not otherwise', async () => {
    expect(await promtool('check', 'rules', join(infra, 'prometheus/alerts.yml'))).toContain(
      `SUCCESS: ${alerts.length} rules found`
    )
    expect(await promtool('test', 'rules', join(infra, 'prometheus/alerts.test.yml'))).toContain('SUCCESS')
    // Every alert has a test that expects it to fire.
    const tested = readFileSync(join(infra, 'prometheus/alerts.test.yml'), 'utf8')
    for (const { alert } of alerts)
      expect({
        alert,
        tested: new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`).test(tested),
      }).toEqual({ alert, tested: true })
  })

  test('every metric the alerts read is one the services export', async () => {
    const names = exported()
    for (const { alert, expr } of alerts) {
      const used = namesIn(expr)
      expect({ alert, some: used.length > 0 }).toEqual({ alert, some: true })
      for (const name of used)
        expect({ alert, name, exported: names.has(name) }).toEqual({ alert, name, exported: true })
    }
  })
})

describe('Grafana', () => {
  test('the dashboard JSON is what infra/grafana/dashboard.ts makes (run it after changing a panel)', () => {
    expect(board).toEqual(JSON.parse(JSON.stringify(dashboard())))
  })

  test('every panel has a data source, a query, a unique id and fits the grid', () => {
    expect(panels.length).toBeGreaterThan(10)
    expect(new Set((board.panels as PanelJson[]).map((p) => p.id)).size).toBe(board.panels.length)
    for (const panel of panels) {
      expect({
        title: panel.title,
        datasource: Boolean(panel.datasource),
        targets: (panel.targets ?? []).length > 0,
      }).toEqual({
        title: panel.title,
        datasource: true,
        targets: true,
      })
      expect(panel.gridPos.x + panel.gridPos.w).toBeLessThanOrEqual(24)
    }
  })

  test("every query is valid PromQL (promtool, with Grafana's variables filled in) and reads only exported metrics", async () => {
    const names = exported()
    for (const expr of queries) {
      const used = namesIn(expr)
      expect({ expr, some: used.length > 0 }).toEqual({ expr, some: true })
      for (const name of used) expect({ expr, name, exported: names.has(name) }).toEqual({ expr, name, exported: true })
    }
    // As recording rules, which promtool parses: one per query.
    const filled = queries.map((expr) => expr.replaceAll('$__rate_interval', '5m').replaceAll('$service', '.*'))
    const dir = mkdtempSync(join(tmpdir(), 'media-dashboard-'))
    try {
      const file = join(dir, 'queries.yml')
      const recording = filled
        .map((expr, i) => `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(expr)}`)
        .join('\n')
      writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${recording}\n`)
      expect(await promtool('check', 'rules', file)).toContain(`SUCCESS: ${queries.length} rules found`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
