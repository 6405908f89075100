/**
 * The names the API gives outputs in the recipes it makes (presets.ts) for videos and sound: what playback looks
 * for, and what the console shows as a media's picture. Each video rung is named `<height>p`. No imports: the
 * console bundles this.
 */
export const VIDEO_OUTPUTS = { poster: 'poster', hls: 'hls', storyboard: 'storyboard' } as const
export const AUDIO_OUTPUTS = { aac: 'audio', opus: 'audio-opus', peaks: 'peaks', cover: 'cover' } as const
