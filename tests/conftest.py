import importlib.util
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the shared helpers: tiny.py

from dynscale.data import make_synthetic  # noqa: E402
from dynscale.idp import train_run  # noqa: E402
from dynscale.train import TrainConfig  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def synthetic():
    return make_synthetic()


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory, synthetic):
    """A small MLP run trained on the synthetic data (a few seconds)."""
    out = tmp_path_factory.mktemp("runs") / "mlp-linear"
    config = TrainConfig(epochs=10, batch_size=64, seed=0)
    return train_run(out, "mlp", synthetic, config, model_options={"profile": "linear", "hidden": [32, 32]},
                     progress=False)


def import_torchvision():
    """torchvision (a test and benchmark dependency only), or None when it is not installed.

    The registry's torchvision wheel is a CUDA build: with the pinned CPU torch its import fails
    while ``torchvision._meta_registrations`` registers the fake kernel of the C++ op
    ``torchvision::nms``, which this CPU torch does not have. The models need no C++ op, so an
    empty module stands in for that one before the import. This is the only place that does it.
    """
    if importlib.util.find_spec("torchvision") is None:
        return None
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    return torchvision


@pytest.fixture(scope="session")
def torchvision():
    """The torchvision module (see :func:`import_torchvision`); the test is skipped without it."""
    module = import_torchvision()
    if module is None:
        pytest.skip("torchvision is not installed")
    return module


@pytest.fixture(scope="session")
def cascade_runs(tmp_path_factory):
    """Two MLP runs of rising cost sharing a held-out split: a cascade's members."""
    root = tmp_path_factory.mktemp("cascade")
    runs = []
    for i, hidden in enumerate(([8], [64, 64])):
        out = root / f"c{i}"
        train_run(out, "mlp", "synthetic", TrainConfig(epochs=4 + 4 * i, holdout=200, seed=i),
                  model_options={"hidden": hidden, "profile": "all-one"}, progress=False)
        runs.append(str(out))
    return runs


@pytest.fixture(scope="session")
def dfs_runs(tmp_path_factory, synthetic):
    """A small ResNet backbone and DFS runs from it: executed choices with the upfront gate
    (``execute``) and the LSTM gate (``lstm``), and the paper's simulated bit-widths (``paper``)."""
    from dynscale.dfs import FractionalSkipping, train_dfs_run

    root = tmp_path_factory.mktemp("dfs-runs")
    options = {"width_mult": 0.5, "blocks_per_stage": 1, "profile": "all-one"}
    config = TrainConfig(epochs=1, train_limit=300, batch_size=50)
    backbone = train_run(root / "backbone", "resnet", synthetic, config, model_options=options, progress=False)
    made = {"backbone": backbone}
    recipes = {"execute": FractionalSkipping(target=40, gates=1, joint=1, execute=True, gate="upfront",
                                             target_mode="ceiling"),
               "lstm": FractionalSkipping(target=40, gates=1, joint=1, execute=True, gate="lstm",
                                          target_mode="ceiling"),
               "paper": FractionalSkipping(target=40, gates=1, joint=0, choices=[0, 8, 16, 32])}
    for name, recipe in recipes.items():
        made[name] = train_dfs_run(root / name, "resnet", synthetic, config, recipe, backbone_run=backbone,
                                   progress=False)
    return made

