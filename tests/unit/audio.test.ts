/**
 * The audio processor's pure rules: the gain, the ebur128 summary, the waveform's planning and 8-bit values, tags,
 * the demuxer each sniffed format is read with, the limits on a probe, and the commands (built, not run).
 */
import { describe, expect, test } from 'bun:test'
import type { FfprobeOutput } from '@app/shared/processor'
import {
  AUDIO_DEMUXERS,
  CODEC_HEADROOM_DB,
  PeakCollector,
  analysisCommand,
  audioLimitFailure,
  encodeCommand,
  headerDuration,
  loudnessGain,
  loudnessTarget,
  parseEbur128,
  readConfig,
  readProbe,
  readTags,
  samplesPerPixel,
  type ProbedAudio,
} from '../../services/audio/main.ts'

const limits = readConfig({
  SYSTEM: 'media',
  RABBITMQ_URL: 'amqp://127.0.0.1',
  S3_BUCKET: 'media',
  S3_REGION: 'us-east-1',
  S3_ACCESS_KEY_ID: 'key',
  S3_SECRET_ACCESS_KEY: 'secret',
}).limits
const DEFAULTS = loudnessTarget({ aac: { name: 'a' }, loudness: {} })!

describe('the gain', () => {
  test('reaches the target when the peak and the maximum allow', () => {
    expect(loudnessGain({ integratedLufs: -23.4, truePeakDb: -12, rangeLu: 5 }, DEFAULTS)).toBe(7.4)
    // Louder than the target: turned down.
    expect(loudnessGain({ integratedLufs: -9, truePeakDb: -12, rangeLu: 5 }, DEFAULTS)).toBe(-7)
  })

  test('is capped by the maximum gain, so a quiet file ends below the target', () => {
    expect(loudnessGain({ integratedLufs: -58.7, truePeakDb: -43.2, rangeLu: 0 }, DEFAULTS)).toBe(20)
    expect(loudnessGain({ integratedLufs: -58.7, truePeakDb: -43.2, rangeLu: 0 }, { ...DEFAULTS, maxGainDb: 6 })).toBe(
      6
    )
  })

  test('is held by the true-peak ceiling less the codec headroom, negative when the peak is already over it', () => {
    // -20 LUFS wants +4, but a -3 dBTP peak may rise only to -1.5 - 0.5.
    expect(loudnessGain({ integratedLufs: -20, truePeakDb: -3, rangeLu: 2 }, DEFAULTS)).toBe(
      -1.5 - CODEC_HEADROOM_DB + 3
    )
    // Clipped master: a peak above the ceiling is brought under it even though the target is louder.
    expect(loudnessGain({ integratedLufs: -20, truePeakDb: 0.4, rangeLu: 2 }, DEFAULTS)).toBe(-2.4)
  })

  test('is zero for silence and without a target', () => {
    expect(loudnessGain({ integratedLufs: null, truePeakDb: null, rangeLu: 0 }, DEFAULTS)).toBe(0)
    expect(loudnessGain({ integratedLufs: null, truePeakDb: -30, rangeLu: 0 }, DEFAULTS)).toBe(0)
    expect(loudnessGain({ integratedLufs: -30, truePeakDb: -10, rangeLu: 0 }, null)).toBe(0)
    expect(loudnessTarget({ aac: { name: 'a' } })).toBeNull()
    expect(loudnessTarget({ aac: { name: 'a' }, loudness: { targetLufs: -14 } })).toEqual({
      targetLufs: -14,
      truePeakDb: -1.5,
      maxGainDb: 20,
    })
  })
})

describe("ebur128's summary", () => {
  const summary = (i: string, lra: string, peak: string) => [
    '[Parsed_ebur128_2 @ 0x55] Summary:',
    '  Integrated loudness:',
    `    I:         ${i} LUFS`,
    '    Threshold: -51.2 LUFS',
    '  Loudness range:',
    `    LRA:         ${lra} LU`,
    '    Threshold:   0.0 LUFS',
    '  True peak:',
    `    Peak:      ${peak} dBFS`,
  ]

  test('is read from the lines after the last "Summary:"', () => {
    const lines = ['size=N/A time=00:00:02.80', ...summary('-41.2', '3.5', '-22.8')]
    expect(parseEbur128(lines)).toEqual({ integratedLufs: -41.2, truePeakDb: -22.8, rangeLu: 3.5 })
  })

  test('silence: the gate (-70) is no loudness and -inf no peak', () => {
    expect(parseEbur128(summary('-70.0', '0.0', '-inf'))).toEqual({
      integratedLufs: null,
      truePeakDb: null,
      rangeLu: 0,
    })
  })

  test('no summary is null', () => {
    expect(parseEbur128(['Error while decoding stream #0:0'])).toBeNull()
  })
})

describe('peaks', () => {
  test('samples per pixel: a multiple of 256, the smallest keeping the pairs within the maximum', () => {
    expect(samplesPerPixel(24_000, 2000)).toBe(256) // 0.5 s: 94 pairs
    expect(samplesPerPixel(48_000 * 60, 2000)).toBe(1536) // 60 s: 1875 pairs
    expect(samplesPerPixel(48_000 * 14_400, 2000)).toBe(345_600) // 4 h: exactly 2000
    for (const samples of [1, 255, 256, 257, 511_999, 512_001, 48_000 * 3600 + 7]) {
      for (const max of [100, 2000, 20_000]) {
        const spp = samplesPerPixel(samples, max)
        expect(spp % 256).toBe(0)
        expect(Math.ceil(samples / spp)).toBeLessThanOrEqual(max)
        if (spp > 256) expect(Math.ceil(samples / (spp - 256))).toBeGreaterThan(max)
      }
    }
  })

  test('min/max pairs of 16-bit PCM fed in odd-sized chunks, scaled by the gain into 8 bits', () => {
    const samples = new Int16Array(1000)
    for (let i = 0; i < samples.length; i++) samples[i] = Math.round(Math.sin(i / 10) * (i < 512 ? 8000 : 16000))
    samples[700] = -32768
    const bytes = new Uint8Array(samples.buffer)
    const collector = new PeakCollector()
    for (let at = 0; at < bytes.length; at += 333) collector.push(bytes.subarray(at, at + 333))
    expect(collector.samples).toBe(1000)
    const flat = collector.waveform(2000, 0)
    expect(flat).toMatchObject({
      version: 2,
      channels: 1,
      sample_rate: 48000,
      samples_per_pixel: 256,
      bits: 8,
      length: 4,
    })
    expect(flat.data).toHaveLength(8)
    expect(flat.data[0]).toBe(-31) // -8000 / 256
    expect(flat.data[1]).toBe(31)
    expect(flat.data[4]).toBe(-128) // the -32768 at 700, clamped
    // +6 dB doubles, within the 8 bits.
    const louder = collector.waveform(2000, 6.0206)
    expect(louder.data).toEqual([-63, 62, -63, 63, -128, 125, -125, 125])
    // Two pixels at most: 512 samples each.
    const wide = collector.waveform(2, 0)
    expect(wide).toMatchObject({ samples_per_pixel: 512, length: 2 })
    expect(wide.data).toEqual([-31, 31, -128, 63])
  })

  test('no samples: an empty waveform', () => {
    expect(new PeakCollector().waveform(2000, 0)).toMatchObject({ length: 0, data: [] })
  })
})

describe('the probe', () => {
  const stream = (over: Record<string, unknown> = {}) => ({
    index: 0,
    codec_type: 'audio',
    codec_name: 'mp3',
    sample_rate: '44100',
    channels: 2,
    duration: '180.5',
    ...over,
  })
  const probe = (streams: unknown[], format: Record<string, unknown> = {}): FfprobeOutput =>
    ({ streams, format: { duration: '180.5', bit_rate: '128000', size: '2888000', ...format } }) as FfprobeOutput

  test('finds the audio stream, its cover and its tags', () => {
    const cover = {
      index: 1,
      codec_type: 'video',
      codec_name: 'mjpeg',
      width: 600,
      height: 600,
      disposition: { attached_pic: 1 },
    }
    const read = readProbe(probe([stream(), cover], { tags: { title: 'T', TRACKNUMBER: '4' } }), 'mp3', limits)
    expect(read).toMatchObject({
      demuxer: 'mp3',
      index: 0,
      codec: 'mp3',
      sampleRate: 44100,
      channels: 2,
      bitrate: 128000,
      headerSeconds: 180.5,
      tags: { title: 'T', track: '4' },
      cover: { index: 1, width: 600, height: 600 },
    })
    // A cover in a codec the cover is not made from (BMP) is no cover.
    expect(readProbe(probe([stream(), { ...cover, codec_name: 'bmp' }]), 'mp3', limits).cover).toBeNull()
  })

  test('refuses no audio, no sample rate, and what is over a limit', () => {
    const video = { index: 0, codec_type: 'video', codec_name: 'h264', width: 64, height: 64 }
    expect(() => readProbe(probe([video]), 'mov', limits)).toThrow('the file has no audio stream')
    expect(() => readProbe(probe([stream({ sample_rate: '0' })]), 'mp3', limits)).toThrow('no sample rate')
    expect(() => readProbe(probe([stream({ duration: '36000' })], { duration: '36000' }), 'mp3', limits)).toThrow(
      'the audio lasts 36000 s, over MAX_AUDIO_SECONDS (14400 s)'
    )
  })

  test('limits: streams, then channels, then duration', () => {
    expect(audioLimitFailure({ streams: 17, channels: 9, durationSeconds: 1e6 }, limits)?.message).toBe(
      'the file has 17 streams, over MAX_AUDIO_STREAMS (16)'
    )
    expect(audioLimitFailure({ streams: 1, channels: 9 }, limits)?.message).toBe(
      'the audio has 9 channels, over MAX_AUDIO_CHANNELS (8)'
    )
    expect(audioLimitFailure({ streams: 1, channels: 8, durationSeconds: 14_400 }, limits)).toBeNull()
  })

  test("the header's duration: the stream's smallest credible figure, capped by the container's", () => {
    const at = (s: Record<string, unknown>, container?: string) =>
      headerDuration({ format: { duration: container } } as FfprobeOutput, stream(s) as never)
    // An MP4 whose movie header claims 10 hours over 1 s of samples: the samples' time.
    expect(at({ duration: '1.0' }, '36000')).toBe(1)
    expect(at({ duration: undefined, tags: { DURATION: '00:03:00.500000000' } }, undefined)).toBe(180.5)
    expect(at({ duration: undefined }, '12.5')).toBe(12.5)
    expect(at({ duration: undefined }, undefined)).toBeNaN()
  })

  test('tags: any case, the first key that has a value, control characters dropped, 1000 characters at most', () => {
    expect(
      readTags(
        { TITLE: ' A\u0000B ', album_artist: 'Band', YEAR: '1999', GENRE: 'x'.repeat(1200) },
        { title: 'stream title', ARTIST: 'Singer', TRACK: '2/9' }
      )
    ).toEqual({ title: 'A B', artist: 'Singer', date: '1999', track: '2/9', genre: 'x'.repeat(1000) })
    expect(readTags(undefined, {})).toEqual({})
  })
})

describe('commands', () => {
  const probed: ProbedAudio = {
    demuxer: 'mp3',
    index: 0,
    codec: 'mp3',
    sampleRate: 44100,
    channels: 6,
    bitrate: 128000,
    headerSeconds: 60,
    tags: {},
    cover: { index: 1, width: 600, height: 600 },
  }

  test('every sniffed audio container maps to one demuxer; video containers and others are not here', () => {
    expect(Object.fromEntries(AUDIO_DEMUXERS)).toEqual({
      mp3: 'mp3',
      aac: 'aac',
      m4a: 'mov',
      mp4: 'mov',
      mov: 'mov',
      flac: 'flac',
      wav: 'wav',
      ogg: 'ogg',
      opus: 'ogg',
      webm: 'matroska',
      mkv: 'matroska',
    })
  })

  test('the analysis decodes the audio stream alone, held to its demuxer, and pipes 48 kHz mono PCM', () => {
    const run = analysisCommand('/in', probed, limits)
    expect(run.inputOptions).toEqual(
      expect.arrayContaining(['-protocol_whitelist', 'file', '-format_whitelist', 'mp3', '-f', 'mp3', '-t', '14401'])
    )
    expect(run.filterGraph).toStartWith('[0:0]aformat=channel_layouts=stereo,')
    expect(run.filterGraph).toContain('ebur128=peak=true')
    expect(run.filterGraph).toContain('aresample=48000,pan=mono|c0=0.5*c0+0.5*c1,aformat=sample_fmts=s16')
    expect(run.outputs.map((o) => o.file)).toEqual(['-', 'pipe:1'])
  })

  test('the encoding: the gain once, split to AAC in M4A (faststart) and Opus in WebM, no tags, no video', () => {
    const run = encodeCommand(
      '/in',
      { ...probed, channels: 1 },
      [
        { name: 'a', format: 'm4a', bitrate: 128, file: '/a.m4a' },
        { name: 'o', format: 'webm', bitrate: 96, file: '/o.webm' },
      ],
      -2.4,
      limits
    )
    expect(run.filterGraph).toBe('[0:0]aformat=channel_layouts=mono,volume=-2.4dB,asplit=2[o0][o1]')
    const [m4a, webm] = run.outputs
    expect(m4a!.options).toEqual(
      expect.arrayContaining(['-c:a', 'aac', '-b:a', '128k', '-ar', '48000', '-movflags', '+faststart', '-f', 'ipod'])
    )
    expect(webm!.options).toEqual(expect.arrayContaining(['-c:a', 'libopus', '-b:a', '96k', '-f', 'webm']))
    for (const output of run.outputs) {
      expect(output.options).toEqual(expect.arrayContaining(['-map_metadata', '-1', '-map_chapters', '-1']))
      expect(output.options.filter((o) => o.startsWith('[') || o.startsWith('0:'))).toHaveLength(1)
    }
    const plain = encodeCommand('/in', probed, [{ name: 'a', format: 'm4a', bitrate: 64, file: '/a.m4a' }], 0, limits)
    expect(plain.filterGraph).toBe('[0:0]aformat=channel_layouts=stereo[o0]')
  })
})
