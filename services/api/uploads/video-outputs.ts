/**
 * The names the API gives a video's outputs in the recipes it makes (presets.ts): what playback looks for, and what
 * the console shows as the video's picture. Each rung is named `<height>p`. No imports: the console bundles this.
 */
export const VIDEO_OUTPUTS = { poster: 'poster', hls: 'hls', storyboard: 'storyboard' } as const
