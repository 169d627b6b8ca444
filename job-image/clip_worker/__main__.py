"""`python -m clip_worker`: the same as the `clip-worker` console script."""

from clip_worker.cli import main

raise SystemExit(main())
