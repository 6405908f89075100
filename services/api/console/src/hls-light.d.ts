// hls.js ships types for its full build only; the light build (no subtitles, alternate audio or DRM, which our
// streams do not use) has the same API.
declare module 'hls.js/light' {
  export { default } from 'hls.js'
}
