"""``python -m harness up|down|env|status|kubeconfig|pod-runner``.

``up`` starts a detached control plane (and, with ``--pod-runner``, the kubelet stand-in) and
records it in ``<workdir>/state.json``; ``down`` stops what that file names; ``env`` prints
shell exports for ``eval``. ``hack/controlplane.sh`` is the shell front end.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.binaries import find_repo_root
from harness.controlplane import DEFAULT_CONTROLLERS, ControlPlaneError, LocalControlPlane
from harness.processes import spawn

WORKDIR_ENV = "TIERWISE_CONTROLPLANE_DIR"


def default_workdir() -> Path:
    """``$TIERWISE_CONTROLPLANE_DIR``, else ``.tmp/controlplane`` in the checkout."""
    if os.environ.get(WORKDIR_ENV):
        return Path(os.environ[WORKDIR_ENV])
    root = find_repo_root()
    if root is not None:
        return root / ".tmp" / "controlplane"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "tierwise" / "run" / "controlplane"


def _attach(workdir: Path) -> LocalControlPlane | None:
    try:
        plane = LocalControlPlane.attach(workdir)
    except FileNotFoundError:
        return None
    if plane.is_running():
        return plane
    # A crashed or half-stopped plane: clean up whatever is left of it.
    plane.stop(remove_workdir=False)
    return None


def cmd_up(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir
    if _attach(workdir) is not None:
        print(f"already running (state in {workdir / 'state.json'})", file=sys.stderr)
        return 0
    controllers = (*DEFAULT_CONTROLLERS, *args.extra_controllers)
    plane = LocalControlPlane(workdir, controllers=controllers).start(detach=True)
    if args.pod_runner:
        _start_pod_runner(plane)
    print(f"control plane up at {plane.server} in {plane.startup_seconds:.1f}s", file=sys.stderr)
    print(f"  kubeconfig: {plane.kubeconfig}", file=sys.stderr)
    print(f"  logs:       {plane.logs_dir}", file=sys.stderr)
    print(
        '  eval "$(hack/controlplane.sh env)" to use it; hack/controlplane.sh down to stop',
        file=sys.stderr,
    )
    return 0


def _start_pod_runner(plane: LocalControlPlane) -> None:
    argv = [
        sys.executable,
        "-m",
        "harness",
        "pod-runner",
        "--kubeconfig",
        str(plane.kubeconfig),
        "--runner-dir",
        str(plane.workdir / "pod-runner"),
        "--service-proxy-socket",
        str(plane.service_proxy_socket),
    ]
    runner = spawn("pod-runner", argv, plane.logs_dir / "pod-runner.log", owned=False)
    plane.components.append(runner)
    plane.save_state()


def cmd_down(args: argparse.Namespace) -> int:
    try:
        plane = LocalControlPlane.attach(args.workdir)
    except FileNotFoundError:
        print("not running", file=sys.stderr)
        return 0
    plane.stop(remove_workdir=False)
    print("control plane stopped", file=sys.stderr)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    plane = _attach(args.workdir)
    if plane is None:
        print("not running; start it with hack/controlplane.sh up", file=sys.stderr)
        return 1
    # kubectl and helm live next to this interpreter (the project's virtualenv).
    bin_dir = Path(sys.executable).parent
    print(f"export KUBECONFIG={shlex.quote(str(plane.kubeconfig))}")
    print(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"')
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    plane = _attach(args.workdir)
    if plane is None:
        print("not running")
        return 1
    print(f"server: {plane.server}\nkubeconfig: {plane.kubeconfig}")
    for name, rss in plane.rss_bytes().items():
        print(f"{name}: pid running, RSS {rss / 2**20:.0f} MiB")
    return 0


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    plane = _attach(args.workdir)
    if plane is None:
        print("not running", file=sys.stderr)
        return 1
    print(plane.mint_kubeconfig(args.user, args.group, namespace=args.namespace))
    return 0


def cmd_pod_runner(args: argparse.Namespace) -> int:
    from harness.podrunner import PodRunner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    runner = PodRunner(
        args.kubeconfig, workdir=args.runner_dir, service_proxy_socket=args.service_proxy_socket
    )
    # SIGTERM from `down` should stop running pods' processes too.
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    try:
        runner.run()
    except KeyboardInterrupt:
        runner.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="A local kube-apiserver + etcd + kube-controller-manager for tests and demos.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help=f"state directory (default ${WORKDIR_ENV} or .tmp/controlplane)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a detached control plane")
    up.add_argument("--pod-runner", action="store_true", help="also run the kubelet stand-in")
    up.add_argument(
        "--extra-controller",
        dest="extra_controllers",
        action="append",
        default=[],
        help="also run this kube-controller-manager controller (repeatable); a real node "
        "needs node-lifecycle-controller and endpointslice-controller",
    )
    up.set_defaults(run=cmd_up)
    sub.add_parser("down", help="stop it").set_defaults(run=cmd_down)
    sub.add_parser("env", help="print shell exports (KUBECONFIG, PATH)").set_defaults(run=cmd_env)
    sub.add_parser("status", help="show server, kubeconfig and memory").set_defaults(run=cmd_status)
    mint = sub.add_parser("kubeconfig", help="mint a client certificate kubeconfig for a user")
    mint.add_argument("user")
    mint.add_argument("--group", action="append", default=[], help="group (repeatable)")
    mint.add_argument("--namespace", default=None, help="default namespace of the context")
    mint.set_defaults(run=cmd_kubeconfig)
    runner = sub.add_parser("pod-runner", help="run opted-in pods locally (foreground)")
    runner.add_argument("--kubeconfig", type=Path, required=True)
    runner.add_argument("--runner-dir", type=Path, default=None, help="pod files and logs")
    runner.add_argument(
        "--service-proxy-socket",
        type=Path,
        default=None,
        help="serve the API server's Service traffic on this socket (the control plane's "
        "svc.sock), so webhooks registered with a Service reach pods run here",
    )
    runner.set_defaults(run=cmd_pod_runner)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workdir is None:
        args.workdir = default_workdir()
    try:
        return int(args.run(args))
    except ControlPlaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
