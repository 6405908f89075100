/**
 * The HTTP server start: the one runtime-specific call in the API and `shared/`. Everything else is Web standards
 * (the Hono app is a `fetch` handler) or `node:` modules that both runtimes provide (`node:sqlite` included).
 * On Deno it is `Deno.serve`, on Bun `Bun.serve`.
 */

export interface ServeOptions {
  port: number
  /**
   * The server's own body cap, on Bun only (its default is 128 MiB, so it is raised to this; Deno.serve takes no such
   * option). Either way MAX_UPLOAD_BYTES is enforced by the app while the body streams (`serverBodyCap`, config.ts).
   */
  maxRequestBodySize: number
  /** Seconds a connection may sit silent, on Bun only (Deno.serve takes no such option; pace.ts cuts slow uploads). */
  idleTimeout: number
  /** Bun's `websocket` handlers for `/v1/ws` (adapter/websocket.ts); Deno upgrades inside `fetch`. */
  websocket?: unknown
}

export interface Server {
  /** The port it listens on (the one the OS picked when asked for 0). */
  port: number
  /**
   * Stops accepting connections and resolves once the requests in flight have finished; with `closeActive` (Bun),
   * closes them at once (event streams never finish by themselves).
   */
  stop(closeActive?: boolean): Promise<void>
}

/** The part of Deno's global this file uses (the project type-checks against bun-types only). */
interface DenoServe {
  serve(
    options: { port: number; onListen?: (addr: { port: number }) => void },
    handler: (request: Request) => Response | Promise<Response>
  ): { addr: { port: number }; shutdown(): Promise<void> }
}

export function serve(fetch: (request: Request) => Response | Promise<Response>, options: ServeOptions): Server {
  const deno = (globalThis as { Deno?: DenoServe }).Deno
  if (deno) {
    // onListen replaces Deno's own "Listening on …" line; main.ts says it instead, as on Bun.
    const server = deno.serve({ port: options.port, onListen: () => {} }, fetch)
    return { port: server.addr.port, stop: () => server.shutdown() }
  }
  const server = Bun.serve({
    port: options.port,
    fetch,
    maxRequestBodySize: options.maxRequestBodySize,
    idleTimeout: options.idleTimeout,
    // A client message over this closes its socket (1009); the socket's own limit is lower (events/socket.ts).
    ...(options.websocket
      ? { websocket: { ...(options.websocket as Bun.WebSocketHandler<unknown>), maxPayloadLength: 64 * 1024 } }
      : {}),
  } as Parameters<typeof Bun.serve>[0])
  return { port: server.port!, stop: (closeActive) => server.stop(closeActive) }
}
