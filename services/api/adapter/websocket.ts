/**
 * WebSockets: Hono's `upgradeWebSocket` for the runtime the API runs on (`hono/bun` or `hono/deno`), and on Bun the
 * `websocket` handlers `Bun.serve` needs beside `fetch` (serve.ts passes them). Loaded when asked, so that neither
 * runtime imports the other's adapter.
 */
import type { UpgradeWebSocket } from 'hono/ws'

export interface Sockets {
  upgradeWebSocket: UpgradeWebSocket
  /** Bun only: the server's `websocket` option. */
  websocket?: unknown
}

export async function loadSockets(): Promise<Sockets> {
  if ((globalThis as { Deno?: unknown }).Deno) {
    const { upgradeWebSocket } = await import('hono/deno')
    return { upgradeWebSocket }
  }
  const { upgradeWebSocket, websocket } = await import('hono/bun')
  return { upgradeWebSocket, websocket }
}
