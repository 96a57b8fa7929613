"""A Hydra callback for tests: appends each job's return value (what a sweeper optimises) to a JSON-lines file."""

import json

from hydra.experimental.callback import Callback


class RecordReturns(Callback):
    def __init__(self, path: str):
        self.path = path

    def on_job_end(self, config, job_return, **kwargs) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"dir": config.hydra.runtime.output_dir, "value": job_return.return_value}) + "\n")
