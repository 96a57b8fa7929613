"""Hydra launcher plugin ``hydra/launcher=local_gpus``: a multirun's jobs in parallel on one machine, one per GPU.

Hydra only instantiates launchers that live under the ``hydra_plugins`` namespace, hence this package. The logic is
in :mod:`.local_gpus_launcher`.
"""
