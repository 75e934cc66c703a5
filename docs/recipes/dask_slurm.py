"""A Dask cluster on Slurm (dask-jobqueue), used through DaskWorkers.

Run on the login node (or in a small job) with ``pip install dask-jobqueue hpsearch[dask]``
in an environment the compute nodes see (a shared filesystem). Each Slurm job is one Dask
worker process with 8 threads, so one hpsearch worker with 8 slots.
"""

from __future__ import annotations

import os

from dask_jobqueue import SLURMCluster

from hpsearch import DaskWorkers
from search import search

if __name__ == "__main__":
    cluster = SLURMCluster(
        queue=os.environ.get("SLURM_PARTITION", "compute"),
        account=os.environ.get("SLURM_ACCOUNT"),
        cores=8, processes=1, memory="16GB", walltime="02:00:00",
        job_script_prologue=[f"source {os.environ.get('VIRTUAL_ENV', '.venv')}/bin/activate"],
    )
    try:
        cluster.scale(jobs=4)  # jobs start as the queue allows: the search uses each as it starts
        with DaskWorkers(cluster, min_workers=1, join_timeout=3600) as pool:
            search(pool)
    finally:
        cluster.close()
