"""Shared pytest setup: each piece of real infrastructure is a plugin of its own."""

pytest_plugins = [
    "tests.plugins.cluster",  # real kube-apiserver + etcd + kube-controller-manager (hack/cluster)
    "tests.plugins.s3",  # real versitygw S3 server (hack/s3.sh)
    "tests.plugins.media",  # generated test videos and a range-capable HTTP server
]
