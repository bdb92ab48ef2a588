"""``python -m snakemake`` whose SLURM status checks come every ``--seconds-between-status-checks``.

The SLURM plugin (2.8) adds 10 s to its interval after every check in which no job finished, up to
180 s, and has no setting for it: on the test's cluster ~70 s of the run waited for jobs already done
(a training that ended at 11:23:14 was noticed at 11:23:54). On a real cluster the back-off spares
the controller; here the check is squeue on one node, and the interval is not what the test tests.
"""

from snakemake_executor_plugin_slurm import Executor

from snakemake.cli import main


def _steady(executor: Executor) -> float:
    return executor.workflow.remote_execution_settings.seconds_between_status_checks


Executor.next_seconds_between_status_checks = property(_steady, lambda executor, seconds: None)
main()
