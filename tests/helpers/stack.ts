/**
 * The whole system in the test process: the API on a real port and, unless told otherwise, the image processor
 * (the video and audio processors when asked), all on the real broker and S3, in a namespace of their own.
 */
import { readConfig as readApiConfig, serverBodyCap } from '../../services/api/config.ts'
import { serve } from '../../services/api/adapter/serve.ts'
import { startApi } from '../../services/api/start.ts'
import { readConfig as readAudioConfig, start as startAudio } from '../../services/audio/main.ts'
import { readConfig as readImagesConfig, start as startImages } from '../../services/images/main.ts'
import { readConfig as readVideosConfig, start as startVideos } from '../../services/videos/main.ts'
import { apiKey, testEnv } from './env.ts'
import { startInfra } from './infra.ts'

export type Stack = Awaited<ReturnType<typeof startStack>>

/** Serves an API on a free port as main.ts serves it: the same limits, and the sockets of /v1/ws. */
export function serveApi(api: Awaited<ReturnType<typeof startApi>>, config: ReturnType<typeof readApiConfig>) {
  return serve(api.app.fetch, {
    port: 0,
    maxRequestBodySize: serverBodyCap(config.maxUploadBytes),
    idleTimeout: 120,
    websocket: api.websocket,
  })
}

export async function startStack(
  options: { images?: boolean; videos?: boolean; audio?: boolean; env?: Record<string, string> } = {}
) {
  await startInfra()
  const env = testEnv({ IMAGE_CONCURRENCY: '2', ...options.env })
  const config = readApiConfig(env)
  const api = await startApi(config)
  const server = serveApi(api, config)
  let images: Awaited<ReturnType<typeof startImages>> | undefined
  const videos = options.videos ? await startVideos(readVideosConfig(env)) : undefined
  const audio = options.audio ? await startAudio(readAudioConfig(env)) : undefined
  const stack = {
    env,
    api,
    url: `http://127.0.0.1:${server.port}`,
    async startImages() {
      images ??= await startImages(readImagesConfig(env))
    },
    /** The image processor running now, if any (its events, its metrics). */
    get imageProcessor() {
      return images
    },
    async stopImages() {
      await images?.stop()
      images = undefined
    },
    /** A request to the API with the test key (`init.headers` may replace it). */
    fetch(path: string, init: RequestInit = {}) {
      return fetch(`${stack.url}${path}`, {
        ...init,
        headers: { ...apiKey, ...(init.headers as Record<string, string>) },
      })
    },
    /** Uploads bytes as the raw body (`query`: the upload's parameters, such as `priority`). */
    upload(body: BodyInit | Uint8Array, headers: Record<string, string> = {}, query?: Record<string, string>) {
      return stack.fetch(`/v1/media${query ? `?${new URLSearchParams(query)}` : ''}`, {
        method: 'POST',
        body: body as BodyInit,
        headers: { 'content-type': 'application/octet-stream', ...headers },
      })
    },
    /** Polls the media until it reaches a final state; fails after `timeoutMs`. */
    async waitForFinal(id: string, timeoutMs = 30_000): Promise<MediaBody> {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const media = (await (await stack.fetch(`/v1/media/${id}`)).json()) as MediaBody
        if (['completed', 'failed', 'cancelled'].includes(media.status)) return media
        if (Date.now() > deadline) throw new Error(`media ${id} is still ${media.status} after ${timeoutMs} ms`)
        await Bun.sleep(20)
      }
    },
    async stop() {
      await images?.stop()
      await videos?.stop()
      await audio?.stop()
      await server.stop(true)
      await api.stop()
    },
  }
  if (options.images !== false) await stack.startImages()
  return stack
}

export interface MediaBody {
  id: string
  jobId: string
  kind: string
  filename: string | null
  size: number
  status: string
  stage: string
  progress: number
  error: { code: string; message: string; class?: string } | null
  metadata: Record<string, unknown> | null
  outputs: { name: string; contentType: string; size: number; width: number; height: number; url: string }[]
  createdAt: string
  updatedAt: string
}
