"""clip-worker: cut a clip out of a video URL with yt-dlp and FFmpeg and upload it to S3."""

__version__ = "0.1.0"
