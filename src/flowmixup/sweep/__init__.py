"""Sweeps: the paper's grid as Hydra multiruns (``scripts/reproduce_tables.py``), checked before anything runs and
priced by the planner; the report of a finished sweep is :mod:`flowmixup.report`'s."""
