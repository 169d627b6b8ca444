"""clip-operator: ClipJob custom resources -> Kubernetes Jobs that cut video clips to S3."""
