"""bench/clip: our fast and accurate modes against yt-dlp section downloads and a full download."""
