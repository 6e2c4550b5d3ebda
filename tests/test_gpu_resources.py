"""The GPU resource path without GPUs: a local Ray that declares 4 fake GPUs, replicas of the engine double.

For each tensor_parallel_size the replicas must be placed (tensor parallelism: a placement group of one-GPU
bundles, the first holding the replica's CPUs) and serve every unit; the sweep launcher counts the same resources.
"""

import pytest
import ray

from actors.cluster import replica_resources
from actors.double import EngineDouble
from hydra_plugins.marginal_ray_launcher import member_needs
from jobs.sample import sample_runs
from tests.test_faults import expected_keys, sample_keys, wait_for

GPUS, CPUS = 4, 8


@pytest.fixture(scope="module")
def fake_gpu_ray():
    """A local Ray with 4 declared GPUs that do not exist, and 8 logical CPUs."""
    ray.init(address="local", num_gpus=GPUS, num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def gpu_run(tmp_path):
    """A config on cluster=gpu for 4 problems x 4 samples in units of 4, with `tensor_parallel_size` and `replicas`."""
    from jobs.cli import compose

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # the double loads nothing; check_model wants a model folder

    def make(tensor_parallel: int, replicas: int):
        return compose("cluster=gpu", f"run_dir={tmp_path}/tp{tensor_parallel}", f"model.path={model}", "tracking=none",
                       "dataset.limit=4", "sampling.n=4", f"replicas={replicas}", "cluster.cpus_per_replica=2",
                       "cluster.unit_size=4", "cluster.startup_timeout_s=120",
                       f"model.tensor_parallel_size={tensor_parallel}")

    return make


@pytest.mark.parametrize("tensor_parallel", [1, 2, 4])
def test_tensor_parallel_replicas_are_placed_on_fake_gpus_and_run_units(fake_gpu_ray, gpu_run, tensor_parallel):
    replicas = GPUS // tensor_parallel  # every GPU taken, so a replica that asks for more than its share waits
    cfg = gpu_run(tensor_parallel, replicas)
    before = set(ray.util.placement_group_table())
    [summary] = sample_runs([cfg], replica_class=EngineDouble)
    keys = sample_keys(cfg.run_dir)
    assert summary.samples == 16 and len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg)
    wait_for(lambda: ray.available_resources().get("GPU", 0) == GPUS, 60)  # the replicas' GPUs are given back
    groups = [g for i, g in ray.util.placement_group_table().items() if i not in before]
    assert len(groups) == (replicas if tensor_parallel > 1 else 0)  # one group of one-GPU bundles per replica
    assert all(len(g["bundles"]) == tensor_parallel and g["state"] == "REMOVED" for g in groups)


@pytest.mark.parametrize("tensor_parallel, cpus, gpus", [(1, 2, 1), (2, 2, 2), (4, 2, 4)])
def test_tensor_parallel_resources_are_the_same_for_the_job_and_the_launcher(gpu_run, tensor_parallel, cpus, gpus):
    each = replica_resources(2, 1, tensor_parallel)
    assert (each.total("CPU"), each.total("GPU")) == (cpus, gpus)
    assert len(each.bundles) == (tensor_parallel if tensor_parallel > 1 else 0)
    assert member_needs(gpu_run(tensor_parallel, 3)) == {"CPU": 3 * cpus, "GPU": 3 * gpus}
