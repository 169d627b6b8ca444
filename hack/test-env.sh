# The test tiers' own control plane: never the demo's (.cluster, API server on 16443).
# Sourced by the Makefile and .ci/run; tests/conftest.py applies the same defaults, so a
# demo left running is neither reused nor disturbed by `make test`. Values already in the
# environment win (e.g. a developer's own ports).
_test_env_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CLUSTER_DIR="${CLUSTER_DIR:-$_test_env_root/.cluster-test}"
export ETCD_PORT="${ETCD_PORT:-17379}"
export ETCD_PEER_PORT="${ETCD_PEER_PORT:-17380}"
export APISERVER_PORT="${APISERVER_PORT:-17443}"
export KCM_PORT="${KCM_PORT:-17257}"
unset _test_env_root
