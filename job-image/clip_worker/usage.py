"""`clip-worker --help`: what the worker reads (job-image/README.md has the details)."""

from __future__ import annotations

USAGE = """\
usage: clip-worker [-h]

Cut one clip out of a video URL and upload it to S3, as a clip-operator Job does.
Every input is an environment variable (never a command line); the result is one JSON
object in CLIP_TERMINATION_LOG and on stdout. Exit codes: 0 success, 1 transient
(retried), 2 invalid input or unsupported source, 3 source gone or forbidden.

required:
  CLIP_SOURCE_URL               http(s) URL of the video page or file
  CLIP_START, CLIP_END          seconds as decimal strings, e.g. 65.5
  CLIP_S3_BUCKET, CLIP_S3_KEY   the destination object (reported in the result)
  CLIP_UPLOAD_URL               presigned PUT URL for that object (made by the operator)

optional:
  CLIP_UPLOAD_HEADERS           JSON of the headers the upload URL signs
  CLIP_RESULT_URL               presigned PUT URL for <key>.result.json
  CLIP_PROGRESS_URL             presigned PUT URL for <key>.progress.json (long clips; optional)
  CLIP_PROGRESS_EVERY           seconds between progress writes (default 5)
  CLIP_SOURCE_FORMAT            yt-dlp format selector
  CLIP_OUTPUT_FORMAT            mp4 | webm | gif | mp3 (default mp4)
  CLIP_MODE                     accurate | fast (default accurate)
  CLIP_MAX_HEIGHT               maximum output height in pixels
  CLIP_MAX_CLIP_SECONDS         refuse longer clips (default 600)
  CLIP_MAX_OUTPUT_BYTES         refuse larger outputs (default 2 GiB)
  CLIP_MAX_SCRATCH_BYTES        cap on the downloaded segment (default 2x the output limit)
  CLIP_NETWORK_TIMEOUT_SECONDS  timeout of every network step (default 30)
  CLIP_PROCESS_TIMEOUT_SECONDS  deadline of each FFmpeg/ffprobe run (default 900)
  CLIP_ALLOW_PRIVATE_NETWORKS   CIDRs a source may resolve into although private
  CLIP_ALLOW_PORTS              ports a source may use besides 80 and 443
  CLIP_WORK_DIR                 scratch directory (default /scratch)
  CLIP_TERMINATION_LOG          where the result JSON goes (default /dev/termination-log)
  CLIP_OUTPUT_FILENAME          file name for Content-Disposition
  CLIP_DEBUG                    any value: log FFmpeg commands and fetched URLs

media options (each makes the clip a re-encode where it touches every frame):
  CLIP_CAPTION_TOP              meme text at the top (newlines start lines; <= 300 chars)
  CLIP_CAPTION_BOTTOM           meme text at the bottom
  CLIP_CAPTION_UPPERCASE        true: draw the captions in upper case (default false)
  CLIP_CROP_ASPECT              crop to W:H, e.g. 9:16, 1:1, 4:5 (exact, even sides)
  CLIP_CROP_POSITION            horizontal place of the crop, 0 left .. 1 right (default 0.5)
  CLIP_LOUDNESS_TARGET          EBU R128 normalisation to this many LUFS (e.g. -14)
  CLIP_LOUDNESS_TRUE_PEAK       true-peak ceiling in dBTP (default -1)
  CLIP_THUMBNAIL_FORMAT         jpeg | webp: a still of the clip beside it; gif: an animated preview
  CLIP_THUMBNAIL_SECONDS        gif: the preview's length, 0.5 .. 10 (default 3)
  CLIP_THUMBNAIL_AT             seconds into the clip for the still (default 0: first frame)
  CLIP_THUMBNAIL_URL            presigned PUT URL for the still (required with CLIP_UPLOAD_URL)
  CLIP_THUMBNAIL_KEY            the still's object key (default <CLIP_S3_KEY>.thumb.jpg|webp)
  CLIP_WATERMARK_URL            http(s) URL of a PNG/JPEG/WebP drawn in a corner (egress guard)
  CLIP_WATERMARK_POSITION       top-left | top-right | bottom-left | bottom-right (default)
  CLIP_WATERMARK_OPACITY        0 .. 1 (default 0.8)
  CLIP_WATERMARK_WIDTH          share of the output width, 0.02 .. 1 (default 0.2)
  CLIP_SUBTITLES_URL            burn in a WebVTT/SRT file (http(s), through the egress guard)
  CLIP_SUBTITLES_LANGUAGE       or the source's own subtitles in this language (yt-dlp), e.g. en

legacy, standalone use without the operator (credentials in the Pod: not how Jobs run):
  CLIP_S3_ENDPOINT, CLIP_S3_REGION, CLIP_S3_ADDRESSING_STYLE, AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
"""
