"""`clip-operator`: run the operator (kopf with our handlers) or check its settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .config import ENV_PREFIX, ConfigError, OperatorConfig, load_config
from .logs import FORMATS
from .logs import setup as setup_logging


def _version() -> str:
    try:
        return version("clip-operator")
    except PackageNotFoundError:
        return "0+unknown"


def settings_help() -> str:
    """Every setting: its environment variable, default and meaning (README: Configuration)."""
    lines = ["settings (environment variables):"]
    for name, field in OperatorConfig.model_fields.items():
        default = field.default
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        lines.append(f"  {ENV_PREFIX}{name.upper()}  (default: {shown if shown != '' else '-'})")
        if field.description:
            lines.append(f"      {field.description}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-operator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=settings_help(),
        description=(
            "Kubernetes operator that turns ClipJob resources into Jobs that cut video clips "
            f"and upload them to S3. Settings come from {ENV_PREFIX}* environment variables "
            "(see README: Configuration)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"clip-operator {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the current cluster")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help=f"watch only this namespace (repeatable; default: {ENV_PREFIX}NAMESPACES or all)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help=f"text (default) or json: one JSON object per line ({ENV_PREFIX}LOG_FORMAT)",
    )
    sub.add_parser("check-config", help="validate the settings and print them")
    smoke = sub.add_parser(
        "smoke-test",
        help="make one short clip with the running operator and wait until it is Ready "
        "(the chart's `helm test`)",
    )
    smoke.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or "default")
    smoke.add_argument("--source", required=True, help="video URL the workers can reach")
    smoke.add_argument("--start", default="0")
    smoke.add_argument("--end", default="2")
    smoke.add_argument("--timeout", type=float, default=300, help="seconds to wait for Ready")
    smoke.add_argument("--keep", action="store_true", help="leave the ClipJob (and its clip)")
    return parser


def _fail(message: str) -> int:
    print(f"clip-operator: error: {message}", file=sys.stderr)
    return 1


def check_cluster() -> str | None:
    """One-line reason why the Kubernetes API or the ClipJob CRD is unusable, or None."""
    from kubernetes import client, config

    try:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    except Exception as exc:
        return f"no Kubernetes credentials ({exc}); set KUBECONFIG or run in a Pod"
    api = client.ApiClient()
    host = api.configuration.host
    # One clear line instead of urllib3's retry warnings: this is a single probe.
    api.configuration.retries = 0
    urllib3_log = logging.getLogger("urllib3")
    level = urllib3_log.level
    urllib3_log.setLevel(logging.ERROR)
    try:
        return _probe(client, api, host)
    finally:
        urllib3_log.setLevel(level)


def _probe(client: Any, api: Any, host: str) -> str | None:
    from kubernetes.client.exceptions import ApiException

    try:
        client.VersionApi(api).get_code(_request_timeout=5)
    except ApiException as exc:
        if exc.status not in (401, 403):
            return f"the Kubernetes API at {host} answered {exc.status} {exc.reason}"
    except Exception as exc:
        reason = str(getattr(exc, "reason", None) or exc).splitlines()[0][:200]
        return f"cannot reach the Kubernetes API at {host}: {reason}"
    try:
        client.ApiextensionsV1Api(api).read_custom_resource_definition(
            "clipjobs.mememaker.io", _request_timeout=10
        )
    except ApiException as exc:
        if exc.status == 404:
            return "the ClipJob CRD is not installed: kubectl apply -f crds/clipjob.yaml"
        if exc.status != 403:  # a namespaced install may not read CRDs: not fatal
            return f"reading the ClipJob CRD failed: {exc.status} {exc.reason}"
    return None


def run(config: OperatorConfig, verbose: bool) -> int:
    import kopf

    from .memory import limit_malloc_arenas

    limit_malloc_arenas()
    # kopf names itself after the user (getpass.getuser()); images run as a bare numeric
    # uid with no passwd entry, where that lookup raises.
    os.environ.setdefault("USER", "clip-operator")

    from . import handlers  # noqa: F401  (registers the handlers)

    setup_logging(config.log_format, verbose)
    problem = check_cluster()
    if problem:
        if config.log_format == "json":  # one format per stream: the error as a JSON line
            logging.getLogger("clip_operator").error(problem)
            return 1
        return _fail(problem)
    # Our signal handlers raise it once the Lease is handed over (shutdown.py).
    stop = asyncio.Event()
    memo = kopf.Memo(config=config, stop=stop)
    try:
        asyncio.run(
            kopf.operator(
                stop_flag=stop,
                standalone=True,
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                memo=memo,
            )
        )
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "smoke-test":
        from . import smoketest

        return smoketest.run(
            args.namespace, args.source, args.start, args.end, args.timeout, args.keep
        )
    try:
        config = load_config()
    except ConfigError as exc:
        return _fail(str(exc))
    if args.command == "check-config":
        print(config.model_dump_json(indent=2))
        return 0
    if args.namespace:
        config = config.model_copy(update={"namespaces": args.namespace})
    if args.log_format:
        config = config.model_copy(update={"log_format": args.log_format})
    return run(config, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
