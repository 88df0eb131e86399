"""Research code for glidebench: experiments and diagnostics that are not part of the installed harness.

Run a script from the repository root, e.g. ``python -m research.measure_ideal_guidance``; see
``research/README.md``.
"""
