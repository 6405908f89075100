/** Where uploads and outputs live in S3, and the content type each original is stored with. */

/** Where a job's outputs (and its cancel marker) go; new per job, so a retry overwrites and nothing collides. */
export const outputPrefix = (system: string, jobId: string) => `${system}/outputs/${jobId}`
/** Where an upload's original is stored. */
export const originalKey = (system: string, mediaId: string) => `${system}/originals/${mediaId}`
/**
 * Where a direct upload's single presigned PUT goes. Not the original's key: the URL stays valid after the upload
 * is completed, so whatever it writes must never be what a job reads. Completion copies it to the original.
 */
export const stagingKey = (system: string, mediaId: string) => `${system}/uploads/${mediaId}`

export const CONTENT_TYPES: Record<string, string> = {
  jpeg: 'image/jpeg',
  png: 'image/png',
  gif: 'image/gif',
  webp: 'image/webp',
  tiff: 'image/tiff',
  bmp: 'image/bmp',
  heic: 'image/heic',
  avif: 'image/avif',
  svg: 'image/svg+xml',
  mp4: 'video/mp4',
  mov: 'video/quicktime',
  '3gp': 'video/3gpp',
  webm: 'video/webm',
  mkv: 'video/x-matroska',
  avi: 'video/x-msvideo',
  mpegts: 'video/mp2t',
  flv: 'video/x-flv',
  mp3: 'audio/mpeg',
  aac: 'audio/aac',
  m4a: 'audio/mp4',
  flac: 'audio/flac',
  wav: 'audio/wav',
  ogg: 'audio/ogg',
}
