/**
 * Figure 15, on a minute of stereo MP3 (a sweep in each channel over pink noise, 44.1 kHz, 192 kb/s) with the
 * built-in audio recipe (AAC in M4A, Opus in WebM, waveform peaks, loudness normalised; no cover, the file has none):
 * through the system (upload → `completed`) against every command the audio processor runs for it, run directly with
 * the argv it builds, alternating: its ffprobe of the source, the ffmpeg analysis (loudness and the waveform's PCM),
 * the ffmpeg encoding, and its read-back ffprobe of each encoding (as the video figure counts its probe too). The
 * ffmpeg runs alone are reported beside, and the processor's own work around them (its peak collector reading the
 * analysis' PCM) is timed apart, after them, so the note can say where the difference goes.
 */
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ffmpegArgv, ffprobe } from '@app/shared/processor'
import {
  CODEC_OVERSHOOT_DB,
  analyse,
  analysisCommand,
  encodeCommand,
  loudnessGain,
  loudnessTarget,
  probeAudio,
  readConfig as readAudioConfig,
  type Encoding,
} from '../../../services/audio/main.ts'
import { builtInRecipe } from '../../../services/api/uploads/presets.ts'
import { apiKey } from '../../helpers/env.ts'
import { cpuOf, stageSeconds, untilCompleted, upload, type Stack } from '../stack.ts'
import { alternate, exec, median, spread, type Bench, type Figure } from '../stats.ts'

const AUDIO_RECIPE = builtInRecipe('audio')
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
const SECONDS = 60

export async function audioFigure(bench: Bench, stack: Stack): Promise<Figure> {
  bench.say(`figure 15: ${SECONDS} s stereo MP3, M4A + Opus + peaks, loudness normalised`)
  const dir = join(bench.work, 'audio')
  mkdirSync(dir, { recursive: true })
  const song = await makeSong(join(dir, 'in.mp3'), SECONDS)
  const bytes = new Uint8Array(readFileSync(song))
  const { direct, besides, times, gainDb } = await directRun(song, dir)

  // The job's own reading of the file: the same gain means the same encoding command.
  const id = await upload(stack.url, bytes) // also the warm-up
  await untilCompleted(stack.url, id)
  const media = (await (await fetch(`${stack.url}/v1/media/${id}`, { headers: apiKey })).json()) as {
    metadata?: { loudness?: { gainDb?: number } }
    outputs: { name: string }[]
  }
  const jobGain = media.metadata?.loudness?.gainDb
  if (jobGain !== gainDb) throw new Error(`the job applied ${jobGain} dB, the direct run ${gainDb} dB`)

  // Through the system as throughPipeline does, with the 202's time and the processor's CPU time kept.
  const cpu = cpuOf(stack)
  const accepted: number[] = []
  const pipeline = async () => {
    cpu.start()
    try {
      const started = performance.now()
      const id = await upload(stack.url, bytes)
      accepted.push(performance.now() - started)
      await untilCompleted(stack.url, id)
      return performance.now() - started
    } finally {
      cpu.stop()
    }
  }
  const rounds = bench.quick ? 1 : 5
  const stagesBefore = await stageSeconds(stack.metrics.audio)
  const { bare, ours } = await alternate(rounds, direct, pipeline)
  const stages = await stageSeconds(stack.metrics.audio)
  for (let i = 0; i < rounds; i++) await besides()
  const stageMs = (name: string) =>
    (((stages[name]?.sum ?? 0) - (stagesBefore[name]?.sum ?? 0)) * 1000) /
    ((stages[name]?.count ?? 0) - (stagesBefore[name]?.count ?? 0))
  const hops = {
    accepted: mean(accepted),
    attempt: stageMs('attempt'),
    download: stageMs('download'),
    process: stageMs('process'),
    upload: stageMs('upload'),
  }
  const overhead = median(ours) / median(bare) - 1
  const ffmpegOnly = times.analysis.map((a, i) => a + times.encoding[i]!)
  const perJob = cpu.perJob(rounds)
  const ms = (n: number) => n.toFixed(0)
  return {
    id: 15,
    what: `${SECONDS} s stereo MP3 (44.1 kHz, 192 kb/s; AAC in M4A, Opus in WebM and waveform peaks, loudness normalised), upload → completed (ms)`,
    value: `${median(ours).toFixed(0)} (${spread(ours, 0)})`,
    baseline: `the same ffprobe and ffmpeg commands (probe, analysis, encoding, read-back probes): ${median(bare).toFixed(0)} (${spread(bare, 0)})`,
    ratio: median(ours) / median(bare),
    target: '≤ 4000 ms; overhead ≤ 10 %',
    pass: median(ours) <= 4000 && overhead <= 0.1,
    note:
      `where the time goes (means, ms): the 202 after ${ms(hops.accepted)}; the processor's attempt ${ms(hops.attempt)} ` +
      `(download ${ms(hops.download)}, process ${ms(hops.process)}, upload ${ms(hops.upload)}); the rest (queue hops, the result applied, the event stream) ${ms(mean(ours) - hops.accepted - hops.attempt)}. ` +
      `Direct (medians, ms): probe ${ms(median(times.probe))}, analysis ${ms(median(times.analysis))}, encoding ${ms(median(times.encoding))}, read-back probes ${ms(median(times.readBack))} (both at once); ` +
      `against the two ffmpeg runs alone the pipeline is ${((median(ours) / median(ffmpegOnly) - 1) * 100).toFixed(0)} % slower. ` +
      `The processor's analyse() (that run with its peak collector reading the PCM) ${ms(median(times.analyse))}. Gain ${gainDb} dB (the job's too); ` +
      `outputs ${media.outputs.map((o) => o.name).join(', ')}; CPU per job (ffmpeg's not counted): ${cpu.describe(perJob)}`,
    data: {
      pipeline: ours,
      direct: bare,
      overheadPercent: overhead * 100,
      ...times,
      accepted,
      stagesMs: hops,
      gainDb,
      cpuPerJob: perJob,
    },
  }
}

/**
 * Music-like stereo: a rising sweep on the left, a falling one on the right, each swelling twice a second, over
 * pink noise. Mastered loud (-8.7 LUFS, true peak -6.7 dBTP), so its gain to the target (-7.3 dB) leaves the peaks
 * far under the ceiling: near it the processor would measure its outputs and maybe encode again, which the baseline
 * leaves out (`directRun` refuses such an input).
 */
async function makeSong(file: string, seconds: number): Promise<string> {
  await exec('ffmpeg', [
    '-nostdin',
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    `aevalsrc='0.4*sin(2*PI*(110*t+60*t*t))*(0.7+0.3*sin(4*PI*t))|0.4*sin(2*PI*(3000*t-20*t*t))*(0.7+0.3*cos(4*PI*t))':s=44100:d=${seconds}`,
    '-f',
    'lavfi',
    '-i',
    `anoisesrc=color=pink:sample_rate=44100:amplitude=0.1:duration=${seconds}:seed=7`,
    '-filter_complex',
    '[1:a]pan=stereo|c0=c0|c1=c0[n];[0:a][n]amix=inputs=2:normalize=0[a]',
    '-map',
    '[a]',
    '-c:a',
    'libmp3lame',
    '-b:a',
    '192k',
    '-ar',
    '44100',
    file,
  ])
  return file
}

/**
 * The processor's two ffmpeg runs for `file`, built by its own `analysisCommand` and `encodeCommand` from its probe
 * and its gain: `direct()` runs them once, one after the other as the job does, and returns its milliseconds.
 * `besides()` times the rest of the processor's work on the file, with its own functions: the probe, `analyse()`
 * (the analysis run with the peak collector reading its PCM, to set against the bare run), and the read-back probe
 * of each encoding (`ffprobe` held to the demuxer, as its `outputSeconds` runs them, one after the other).
 */
async function directRun(file: string, dir: string) {
  const config = readAudioConfig({ S3_ACCESS_KEY_ID: 'unused', S3_SECRET_ACCESS_KEY: 'unused' })
  const signal = new AbortController().signal
  const probed = await probeAudio(file, 'mp3', config.limits, signal)
  const { loudness } = await analyse(file, probed, config.limits, { signal })
  const target = loudnessTarget(AUDIO_RECIPE)
  const gainDb = loudnessGain(loudness, target)
  const peak = loudness.truePeakDb
  if (target && peak !== null && peak + gainDb > target.truePeakDb - CODEC_OVERSHOOT_DB)
    throw new Error(`the input peaks at ${peak} dBTP: with ${gainDb} dB the processor would measure its outputs too`)
  const { aac, opus } = AUDIO_RECIPE
  if (!aac || !opus || !AUDIO_RECIPE.peaks)
    throw new Error('the built-in audio recipe no longer asks for M4A, Opus and peaks')
  const encodings: Encoding[] = [
    { name: aac.name, format: 'm4a', bitrate: aac.bitrate ?? 128, file: join(dir, `direct-${aac.name}.m4a`) },
    { name: opus.name, format: 'webm', bitrate: opus.bitrate ?? 96, file: join(dir, `direct-${opus.name}.webm`) },
  ]
  // The analysis writes its PCM to stdout, which the processor reads for the waveform; here it goes to /dev/null.
  const analysis = ffmpegArgv(analysisCommand(file, probed, config.limits))
  const encoding = ffmpegArgv(encodeCommand(file, probed, encodings, gainDb, config.limits))
  const times = {
    analysis: [] as number[],
    encoding: [] as number[],
    probe: [] as number[],
    analyse: [] as number[],
    readBack: [] as number[],
  }
  const direct = async () => {
    const started = performance.now()
    await probeAudio(file, 'mp3', config.limits, signal)
    const probedAt = performance.now()
    await exec('ffmpeg', analysis)
    const analysed = performance.now()
    await exec('ffmpeg', encoding)
    const encoded = performance.now()
    await Promise.all(encodings.map((e) => ffprobe(e.file, e.format === 'm4a' ? 'mov' : 'matroska', signal)))
    const ended = performance.now()
    times.probe.push(probedAt - started)
    times.analysis.push(analysed - probedAt)
    times.encoding.push(encoded - analysed)
    times.readBack.push(ended - encoded)
    return ended - started
  }
  const besides = async () => {
    const started = performance.now()
    await analyse(file, probed, config.limits, { signal })
    times.analyse.push(performance.now() - started)
  }
  return { direct, besides, times, gainDb }
}
