"""The ``hpsearch`` console command: argument parsing and exit codes only.

``hpsearch demo`` runs a real search on a dataset bundled with scikit-learn and prints
the ranked results table — the quickest way to see hpsearch work on a new machine.
``hpsearch status FILE`` prints the searches recorded in a storage file, and
``hpsearch dashboard FILE`` serves a live page of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

_DATASETS = ("digits", "breast_cancer", "wine", "iris")


def _demo(args: argparse.Namespace) -> int:
    from sklearn import datasets
    from sklearn.svm import SVC

    from . import Real, run_search
    from .workers.threads import available_cores

    X, y = getattr(datasets, f"load_{args.dataset}")(return_X_y=True)
    workers = args.workers or available_cores()
    space: dict[str, Any]
    if args.strategy == "grid":
        space = {"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3, 1e-2]}
    else:
        space = {"C": Real(1e-2, 1e3, prior="log-uniform"), "gamma": Real(1e-5, 1e-1, prior="log-uniform")}
    print(
        f"hpsearch demo: {args.strategy} search of an SVC on {args.dataset} "
        f"({X.shape[0]} samples, {X.shape[1]} features), {args.cv}-fold CV, {workers} local worker(s)"
    )
    start = time.perf_counter()
    result = run_search(
        SVC(),
        space,
        X,
        y,
        strategy=args.strategy,
        n_iter=args.n_iter,
        cv=args.cv,
        workers=workers,
        random_state=args.seed,
        progress=None if args.progress else False,
    )
    elapsed = time.perf_counter() - start
    print()
    print(result.summary(top=args.top))
    print()
    print(f"best params: {result.best_params_}")
    print(f"best mean CV accuracy: {result.best_score_:.4f}")
    print(f"{len(result.cv_results_['params']) * result.n_splits_} fits in {elapsed:.1f} s")
    return 0


def _status(args: argparse.Namespace) -> int:
    from .storage import list_searches, load_search
    from .storage.status import format_status

    searches = [load_search(args.file, args.name)] if args.name else list_searches(args.file)
    print(format_status(searches))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from .dashboard import serve

    serve(args.file, host=args.host, port=args.port, open_browser=args.open)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpsearch", description="Fast hyperparameter search.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a real search on a bundled dataset and print the results")
    demo.add_argument("--dataset", choices=_DATASETS, default="digits")
    demo.add_argument("--strategy", choices=("grid", "random", "bayes"), default="grid")
    demo.add_argument("--workers", type=int, default=None, help="local workers, threads or processes chosen by the search (default: one per core)")
    demo.add_argument("--n-iter", type=int, default=20, help="candidates for random and bayes (default 20)")
    demo.add_argument("--cv", type=int, default=5, help="CV folds (default 5)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--top", type=int, default=None, help="rows of the table (default: all)")
    demo.add_argument("--progress", action="store_true", help="show a progress bar")
    demo.set_defaults(func=_demo)
    status = sub.add_parser("status", help="a table of the searches in a storage file")
    status.add_argument("file", help="the storage file (run_search(..., storage=FILE))")
    status.add_argument("--name", default=None, help="only this search")
    status.set_defaults(func=_status)
    dash = sub.add_parser("dashboard", help="a live web page of the searches in a storage file (read-only)")
    dash.add_argument("file", help="the storage file (run_search(..., storage=FILE))")
    dash.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1: this machine only)")
    dash.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    dash.add_argument("--open", action="store_true", help="open it in a web browser")
    dash.set_defaults(func=_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpsearch`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a clear message, not a traceback, for a user's mistake
        from .errors import HPSearchError

        if isinstance(exc, HPSearchError):
            print(f"hpsearch: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
