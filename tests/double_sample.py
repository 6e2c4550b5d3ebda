"""`python -m jobs.sample` with the engine double in place of vLLM, for tests that run the job as a process.

    python -m tests.double_sample run_dir=DIR model.path=FOLDER [overrides]

Only tests start it: the double is never reachable from the config.
"""

from omegaconf import DictConfig

from actors.double import EngineDouble
from jobs import cli
from jobs.sample import sample_runs


@cli.entry_point("config")
def main(cfg: DictConfig) -> None:
    sample_runs([cfg], replica_class=EngineDouble)


if __name__ == "__main__":
    main()
