"""The run wing: the staged runner that every generate-and-measure suite shares.

A run is one direction, every stage resumable (:mod:`.stages`):

    RunOptions (options.py) -> RunPlan (plan.py: suite profile < preset < flags; data source; models;
    RunSpec -> run dir) -> run directory (rundir.py) -> generation (generate.py) -> features
    (featurepass.py) -> metrics and intervals (measure.py, results.py, uncertainty.py) -> outputs.

``--prompts FILE`` and ``glidebench prompts`` (the protocol as a file) are :mod:`.prompts`; CPU threads per
stage are :mod:`.threads`; the progress bars are :mod:`.progress`. The suites (:mod:`glidebench.suites`) hold
the suite files, their registry and each suite's entry point; the report (:mod:`glidebench.report`) reads a
run's files and never imports this package.
"""
