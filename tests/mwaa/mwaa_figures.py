"""Figures the mwaa tier measures (seconds by name), printed at the end of the run; never asserted."""

TIMINGS: dict[str, float] = {}
