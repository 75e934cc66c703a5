"""``hpsearch-worker``: lend this machine's cores to a running search.

::

    hpsearch-worker --connect tcp://master:5555 --token hps1:... [--slots N] [--name NAME] [--gpu ID]

The master prints this exact command (``RemoteWorkers.join_command``). The token may
also come from the ``HPSEARCH_TOKEN`` environment variable, which keeps it out of the
process list. ``python -m hpsearch.worker_cli`` is the same command without
installation. Exit codes: 0 after SIGINT/SIGTERM or a master's shutdown, 2 for bad
arguments (address, token), 3 when the master rejects this worker (versions).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser", "prepare_tensorflow"]

EXIT_OK, EXIT_USAGE, EXIT_REJECTED = 0, 2, 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hpsearch-worker`` (reusable as a subcommand's)."""
    parser = argparse.ArgumentParser(
        prog="hpsearch-worker",
        description="Run hpsearch tasks for a master started with RemoteWorkers.",
    )
    parser.add_argument("--connect", required=True, metavar="ADDRESS",
                        help="the master's endpoint, e.g. tcp://master:5555")
    parser.add_argument("--token", default=os.environ.get("HPSEARCH_TOKEN"),
                        help="the join token printed by the master (default: $HPSEARCH_TOKEN)")
    parser.add_argument("--slots", type=int, default=1, help="tasks run at once (default 1)")
    parser.add_argument("--name", default=None, help="name shown by the master (default host-pid)")
    parser.add_argument("--inner-threads", type=int, default=None,
                        help="BLAS/OpenMP threads per task (default cores // slots)")
    parser.add_argument("--gpu", default=None, metavar="ID",
                        help="pin this worker to GPU ID ('0', '0,1'; '' hides every GPU): sets "
                             "CUDA_VISIBLE_DEVICES before TensorFlow loads, with memory growth on")
    parser.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                        help="exit when process PID, which started this worker, exits")
    parser.add_argument("--heartbeat", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    # For tests only: announce a fake version, e.g. --fake-version hpsearch=0.0.0
    parser.add_argument("--fake-version", action="append", default=[], help=argparse.SUPPRESS)
    return parser


def prepare_tensorflow(slots: int, inner_threads: int, gpu: str | None = None) -> dict[str, str]:
    """Size TensorFlow for this worker before anything imports it.

    TensorFlow's thread pools are per process and read ``TF_NUM_INTRAOP_THREADS`` /
    ``TF_NUM_INTEROP_THREADS`` when it starts: ``slots`` concurrent fits get
    ``slots`` inter-op threads and each op the worker's per-task share of the cores,
    so N fits do not oversubscribe the cores. Values the user set are kept. With
    ``gpu``, TensorFlow is loaded now through
    :func:`hpsearch.estimators.configure_tensorflow` (``CUDA_VISIBLE_DEVICES``, memory
    growth); without it, TensorFlow is not imported at all.

    Returns the environment values in force.
    """
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(inner_threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(slots))
    if gpu is not None:
        from .estimators import configure_tensorflow  # the optional extra, only on request

        configure_tensorflow(gpu=gpu)
    keys = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "CUDA_VISIBLE_DEVICES")
    return {k: os.environ[k] for k in keys if k in os.environ}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a worker until it is stopped; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s hpsearch-worker %(levelname)s %(message)s")

    from .errors import VersionMismatchError
    from .workers.agent import WorkerAgent
    from .workers.protocol import parse_token, server_key

    def fail(message: str, code: int) -> int:
        print(f"hpsearch-worker: error: {message}", file=sys.stderr)
        return code

    if not args.token:
        return fail("no token: pass --token hps1:... (printed by the master) or set HPSEARCH_TOKEN", EXIT_USAGE)
    try:
        secret = parse_token(args.token)
        curve_server_key = server_key(args.token)
    except ValueError as exc:
        return fail(f"unreadable token: {exc}", EXIT_USAGE)
    if args.slots < 1:
        return fail(f"--slots must be >= 1, got {args.slots}", EXIT_USAGE)
    overrides = {}
    for item in args.fake_version:
        name, _, version = item.partition("=")
        overrides[name] = version
    import zmq

    try:
        # Check the address up front: a typo must fail now, not retry forever.
        with zmq.Context() as probe_ctx, probe_ctx.socket(zmq.DEALER) as probe:
            probe.linger = 0
            probe.connect(args.connect)
    except zmq.ZMQError as exc:
        return fail(f"bad address {args.connect!r}: {exc} (expected e.g. tcp://master:5555)", EXIT_USAGE)

    from .errors import MissingDependencyError
    from .workers.threads import available_cores

    inner_threads = args.inner_threads or max(1, available_cores() // args.slots)
    try:
        applied = prepare_tensorflow(args.slots, inner_threads, args.gpu)
    except (MissingDependencyError, RuntimeError) as exc:  # no TensorFlow, or loaded too early
        return fail(f"--gpu {args.gpu!r}: {exc}", EXIT_USAGE)
    logging.getLogger("hpsearch.worker").info("TensorFlow settings: %s", applied)

    # This process runs only hpsearch's tasks: scikit-learn's parameter names are
    # read once per estimator class, not three times per task (see the module).
    from .workers.param_names import install as cache_param_names

    cache_param_names()
    agent = WorkerAgent(args.connect, secret, slots=args.slots, name=args.name,
                        inner_threads=args.inner_threads, version_overrides=overrides,
                        heartbeat=args.heartbeat,
                        parent_pid=args.parent_pid, owns_process=True, server_key=curve_server_key)  # handles SIGINT/SIGTERM
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack (diagnosis)
        import faulthandler

        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return agent.run()
    except VersionMismatchError as exc:
        return fail(str(exc), EXIT_REJECTED)


if __name__ == "__main__":
    sys.exit(main())
