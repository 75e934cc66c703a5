"""A Dask cluster on Kubernetes (dask-kubernetes' operator), used through DaskWorkers.

Needs the Dask operator installed in the cluster (``helm install dask-kubernetes-operator
dask/dask-kubernetes-operator``) and ``pip install dask-kubernetes``. Run it from a pod in
the same Kubernetes cluster (the client talks to the scheduler and to every worker). The
image must hold the same hpsearch, scikit-learn and numpy as this machine: build it
from ``ghcr.io/dask/dask`` with ``pip install hpsearch[dask]``.
"""

from __future__ import annotations

import os

from dask_kubernetes.operator import KubeCluster

from hpsearch import DaskWorkers
from search import search

IMAGE = os.environ.get("HPSEARCH_IMAGE", "registry.example.com/hpsearch-dask:latest")

if __name__ == "__main__":
    cluster = KubeCluster(name="hpsearch", image=IMAGE, n_workers=4,
                          resources={"requests": {"cpu": "2", "memory": "4Gi"},
                                     "limits": {"cpu": "2", "memory": "4Gi"}})
    try:
        cluster.adapt(minimum=2, maximum=16)  # workers come and go: the search follows them
        with DaskWorkers(cluster, min_workers=2, join_timeout=600) as pool:
            search(pool)
    finally:
        cluster.close()
