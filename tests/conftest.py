import sys
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
