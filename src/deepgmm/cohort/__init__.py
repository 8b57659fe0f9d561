"""Per-case runs of a cohort: one unit of work per case, here or on a Dask cluster.

- :mod:`deepgmm.cohort.case`: the unit of work (one case into ``OUT/cases/<case>/``,
  atomically, with the manifest ``--resume`` checks);
- :mod:`deepgmm.cohort.cluster`: running the units serially or as Dask tasks;
- :mod:`deepgmm.cohort.merge`: joining the cases into the usual ``OUT`` files;
- :mod:`deepgmm.cohort.run`: the entry points the commands call.

Importing this package does not import Dask; only a run with workers or a scheduler does.
"""

from deepgmm.cohort.run import (
    ClusterOptions,
    CohortRun,
    predict_cohort,
    segment_case_cohort,
    segment_cohort,
)

__all__ = ["ClusterOptions", "CohortRun", "predict_cohort", "segment_case_cohort",
           "segment_cohort"]
