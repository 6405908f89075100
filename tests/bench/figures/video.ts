/**
 * Figures 5 and 13, on a 10-second 720p clip with the built-in video recipe (360p and 720p as MP4 and HLS, a poster, a
 * storyboard; 1080p is above the source):
 * - 5: through the system (upload → `completed`) against the same ffprobe and ffmpeg commands the video processor
 *   runs for it, and the same playlist and storyboard writing, run directly, alternating.
 * - 13: what HLS costs: the packaging (every rung, then the master and the storyboard's WebVTT) as a share of the
 *   transcode's time, from the direct runs; and the objects a job writes per rung, read from a job's outputs.
 * - 14: the same share on a 60 s 720p clip, direct runs only.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { hlsRungNames, storyboardSpriteName } from '@app/shared'
import { ffmpegArgv } from '@app/shared/processor'
import { builtInRecipe } from '../../../services/api/uploads/presets.ts'
import {
  HLS_DEFAULT_SEGMENT_SECONDS,
  countTiles,
  hlsPackageCommand,
  masterPlaylist,
  planRenditions,
  planStoryboard,
  posterCommand,
  posterSize,
  probeVideo,
  readConfig as readVideosConfig,
  readPackagedRung,
  storyboardVtt,
  transcodeCommand,
} from '../../../services/videos/main.ts'
import { apiKey } from '../../helpers/env.ts'
import { throughPipeline, untilCompleted, upload, type Stack } from '../stack.ts'
import { alternate, exec, median, spread, type Bench, type Figure } from '../stats.ts'

const VIDEO_RECIPE = builtInRecipe('video')

export async function videoFigures(bench: Bench, stack: Stack): Promise<Figure[]> {
  bench.say('figures 5 and 13: 10 s 720p video, HLS and a storyboard')
  const dir = join(bench.work, 'video')
  mkdirSync(dir, { recursive: true })
  const clip = await makeClip(join(dir, 'in.mp4'), 10, 'medium')
  const bytes = new Uint8Array(readFileSync(clip))

  const { direct, times, plan, hls, storyboard } = await directRun(clip, dir)

  await throughPipeline(stack.url, bytes) // warm-up
  const { bare, ours } = await alternate(bench.quick ? 1 : 7, direct, () => throughPipeline(stack.url, bytes))
  const overhead = median(ours) / median(bare) - 1

  // The objects one job writes, from its outputs as the API lists them.
  const id = await upload(stack.url, bytes)
  await untilCompleted(stack.url, id)
  const media = (await (await fetch(`${stack.url}/v1/media/${id}`, { headers: apiKey })).json()) as {
    outputs: { name: string }[]
  }
  const names = media.outputs.map((o) => o.name)
  const perRung = plan.map((p) => {
    const rung = hlsRungNames(hls.name, p.name)
    return names.filter((n) => n === rung.playlist || n === rung.segments).length
  })
  const masters = names.filter((n) => n === hls.name).length
  const storyboards = names.filter((n) => n === storyboard.name || n === storyboardSpriteName(storyboard.name)).length
  const shares = times.packaging.map((ms, i) => ms / times.transcode[i]!)
  const share = median(shares)

  // The same on a minute of video (the length the packaging's cost was first measured on): the packaging's few
  // ffmpeg starts weigh less against a longer transcode.
  bench.say('figure 14: 60 s 720p video, the packaging against the transcode')
  const longDir = join(dir, 'long')
  mkdirSync(longDir, { recursive: true })
  const minute = await directRun(await makeClip(join(longDir, 'in.mp4'), 60, 'ultrafast'), longDir)
  for (let i = 0; i < (bench.quick ? 1 : 3); i++) await minute.direct()
  const longShares = minute.times.packaging.map((ms, i) => ms / minute.times.transcode[i]!)
  const longShare = median(longShares)
  const rungNames = plan.map((r) => r.name).join(', ')
  return [
    {
      id: 5,
      what: `10 s 720p H.264 clip (${rungNames} as MP4 and HLS, a poster and a storyboard), upload → completed (ms)`,
      value: `${median(ours).toFixed(0)} (${spread(ours, 0)})`,
      baseline: `the same ffprobe + ffmpeg commands and playlist writing: ${median(bare).toFixed(0)} (${spread(bare, 0)})`,
      ratio: median(ours) / median(bare),
      target: 'overhead ≤ 5 %',
      pass: overhead <= 0.05,
      data: { pipeline: ours, direct: bare, overheadPercent: overhead * 100 },
    },
    {
      id: 13,
      what: `HLS on the same clip: packaging ${rungNames} (then the master and the storyboard's WebVTT) as a share of the transcode; objects per rung`,
      value: `${(share * 100).toFixed(2)} % (${spread(shares.map((x) => x * 100))} %); ${Math.max(...perRung)} objects per rung`,
      baseline: `the transcode: ${median(times.transcode).toFixed(0)} ms; packaging ${median(times.packaging).toFixed(0)} ms`,
      ratio: share,
      target: 'packaging ≤ 2 % of the transcode; ≤ 2 objects per rung',
      pass: share <= 0.02 && Math.max(...perRung) <= 2,
      note: `objects of one job: ${perRung.join(' + ')} for the rungs (${rungNames}: playlist and media each), ${masters} master, ${storyboards} for the storyboard (WebVTT and sprite), beside the poster and ${plan.length} MP4s; ${names.length} in all`,
      data: { ...times, shares, perRung, masters, storyboards, outputs: names },
    },
    {
      id: 14,
      what: `HLS on a 60 s 720p clip: packaging ${minute.plan.map((r) => r.name).join(', ')} (then the master and the WebVTT) as a share of the transcode`,
      value: `${(longShare * 100).toFixed(2)} % (${spread(longShares.map((x) => x * 100))} %)`,
      baseline: `the transcode: ${median(minute.times.transcode).toFixed(0)} ms; packaging ${median(minute.times.packaging).toFixed(0)} ms`,
      ratio: longShare,
      target: 'packaging ≤ 2 % of the transcode',
      pass: longShare <= 0.02,
      data: { ...minute.times, shares: longShares },
    },
  ]
}

/** The clip the figures use: `seconds` of 720p H.264/AAC (testsrc2 and a tone), encoded with x264's `preset`. */
async function makeClip(file: string, seconds: number, preset: string): Promise<string> {
  await exec('ffmpeg', [
    '-nostdin',
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    `testsrc2=size=1280x720:rate=30:duration=${seconds}`,
    '-f',
    'lavfi',
    '-i',
    `sine=frequency=440:sample_rate=48000:duration=${seconds}`,
    '-c:v',
    'libx264',
    '-preset',
    preset,
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
    file,
  ])
  return file
}

/**
 * What the processor runs for a clip with the built-in recipe, as plain commands: `direct()` runs them once and
 * returns its milliseconds, recording the transcode's and the packaging's own (the packaging, then the master and
 * the WebVTT) in `times`.
 */
async function directRun(clip: string, dir: string) {
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
  const { hls, storyboard } = VIDEO_RECIPE
  if (!hls || !storyboard) throw new Error('the built-in video recipe no longer asks for HLS and a storyboard')
  const top = plan.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a))
  const board = {
    plan: planStoryboard(probed.metadata.durationSeconds, top, storyboard.width),
    sprite: join(dir, `direct-${storyboardSpriteName(storyboard.name)}.jpg`),
    tiles: join(dir, 'direct-tiles'),
  }
  const rungs = plan.map((p) => {
    const names = hlsRungNames(hls.name, p.name)
    return {
      ...p,
      files: { playlist: join(dir, `${names.playlist}.m3u8`), segments: join(dir, `${names.segments}.m4s`) },
    }
  })
  const segmentSeconds = hls.segmentSeconds ?? HLS_DEFAULT_SEGMENT_SECONDS
  const probe = [
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
  ]
  const transcode = ['ffmpeg', ...ffmpegArgv(await transcodeCommand(clip, probed, plan, config.limits, board))]
  const packaging = rungs.map((r) => ['ffmpeg', ...ffmpegArgv(hlsPackageCommand(r.file, r.files, segmentSeconds))])
  const times = { transcode: [] as number[], packaging: [] as number[] }
  const direct = async () => {
    const started = performance.now()
    await exec(probe[0]!, probe.slice(1))
    await exec('ffmpeg', ffmpegArgv(poster))
    const transcoding = performance.now()
    await exec(transcode[0]!, transcode.slice(1))
    const packagingStarts = performance.now()
    // As the processor does after the transcode: the rungs packaged side by side, then the master and the WebVTT.
    await Promise.all(packaging.map(([program, ...args]) => exec(program!, args)))
    const packaged = await Promise.all(
      rungs.map((r) => readPackagedRung(r.files, { ...r, frameRate: probed.encodeFrameRate }))
    )
    const version = Math.max(...packaged.map((p) => p.playlist.version))
    writeFileSync(
      join(dir, `${hls.name}.m3u8`),
      masterPlaylist(
        packaged.map((p) => p.variant),
        version
      )
    )
    const vtt = storyboardVtt(
      board.plan,
      basename(board.sprite),
      countTiles(board.tiles),
      probed.metadata.durationSeconds
    )
    writeFileSync(join(dir, `${storyboard.name}.vtt`), vtt)
    const ended = performance.now()
    times.transcode.push(packagingStarts - transcoding)
    times.packaging.push(ended - packagingStarts)
    return ended - started
  }

  return { direct, times, plan, hls, storyboard }
}
