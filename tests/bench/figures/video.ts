/**
 * Figure 5: a 10-second 720p clip through the system (upload → `completed`) against the same ffprobe and ffmpeg
 * commands the video processor runs for it, run directly, alternating.
 */
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { builtInRecipe } from '../../../services/api/uploads/presets.ts'

const VIDEO_RECIPE = builtInRecipe('video')
import {
  ffmpegArgv,
  planRenditions,
  posterCommand,
  posterSize,
  probeVideo,
  readConfig as readVideosConfig,
  transcodeCommand,
} from '../../../services/videos/main.ts'
import { throughPipeline, type Stack } from '../stack.ts'
import { alternate, exec, median, spread, type Bench, type Figure } from '../stats.ts'

export async function videoFigure(bench: Bench, stack: Stack): Promise<Figure> {
  bench.say('figure 5: 10 s 720p video')
  const dir = join(bench.work, 'video')
  mkdirSync(dir, { recursive: true })
  const clip = join(dir, 'in.mp4')
  await exec('ffmpeg', [
    '-nostdin',
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=1280x720:rate=30:duration=10',
    '-f',
    'lavfi',
    '-i',
    'sine=frequency=440:sample_rate=48000:duration=10',
    '-c:v',
    'libx264',
    '-preset',
    'medium',
    '-crf',
    '20',
    '-pix_fmt',
    'yuv420p',
    '-g',
    '60',
    '-c:a',
    'aac',
    '-b:a',
    '128k',
    '-shortest',
    '-movflags',
    '+faststart',
    clip,
  ])
  const bytes = new Uint8Array(readFileSync(clip))

  // The commands the processor runs for this clip, as plain argv.
  const config = readVideosConfig({ S3_ACCESS_KEY_ID: 'unused', S3_SECRET_ACCESS_KEY: 'unused' })
  const probed = await probeVideo(clip, 'mp4', config.limits, new AbortController().signal)
  const display = { width: probed.metadata.width, height: probed.metadata.height }
  const plan = planRenditions(VIDEO_RECIPE.renditions, display).map((p) => ({
    ...p,
    file: join(dir, `direct-${p.name}.mp4`),
  }))
  const poster = await posterCommand(
    clip,
    probed,
    posterSize(VIDEO_RECIPE.poster, display),
    join(dir, 'direct-poster.webp'),
    {
      maxPixels: config.limits.maxPixels,
      at: probed.metadata.durationSeconds * 0.1,
    }
  )
  const commands = [
    [
      'ffprobe',
      '-v',
      'error',
      '-protocol_whitelist',
      'file',
      '-format_whitelist',
      'mov',
      '-f',
      'mov',
      '-show_format',
      '-show_streams',
      '-of',
      'json',
      clip,
    ],
    ['ffmpeg', ...ffmpegArgv(poster)],
    ['ffmpeg', ...ffmpegArgv(await transcodeCommand(clip, probed, plan, config.limits))],
  ]
  const direct = async () => {
    const started = performance.now()
    for (const [program, ...args] of commands) await exec(program!, args)
    return performance.now() - started
  }

  await throughPipeline(stack.url, bytes) // warm-up
  const { bare, ours } = await alternate(bench.quick ? 1 : 7, direct, () => throughPipeline(stack.url, bytes))
  const overhead = median(ours) / median(bare) - 1
  return {
    id: 5,
    what: `10 s 720p H.264 clip (renditions ${plan.map((r) => `${r.height}p`).join(', ')} and a poster), upload → completed (ms)`,
    value: `${median(ours).toFixed(0)} (${spread(ours, 0)})`,
    baseline: `the same ffprobe + ffmpeg commands: ${median(bare).toFixed(0)} (${spread(bare, 0)})`,
    ratio: median(ours) / median(bare),
    target: 'overhead ≤ 5 %',
    pass: overhead <= 0.05,
    data: { pipeline: ours, direct: bare, overheadPercent: overhead * 100 },
  }
}
