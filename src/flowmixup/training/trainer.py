"""Old import path, kept so that code written against it still imports: the training code now lives in run.py,
build.py, loop.py, checkpoint.py, records.py, signals.py and rundir.py. New code imports from those."""
from .build import build_loss, build_model, compile_units, instantiate, load_data, to_input  # noqa: F401
from .checkpoint import CheckpointError  # noqa: F401
from .run import run  # noqa: F401
from .rundir import RunDirBusy  # noqa: F401
