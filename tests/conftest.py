import pytest

from dynscale.data import make_synthetic
from dynscale.training import TrainConfig, train_run


@pytest.fixture(scope="session")
def synthetic():
    return make_synthetic()


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory, synthetic):
    """A small MLP run trained on the synthetic data (a few seconds)."""
    out = tmp_path_factory.mktemp("runs") / "mlp-linear"
    config = TrainConfig(epochs=10, batch_size=64, seed=0)
    return train_run(out, "mlp", synthetic, config, {"profile": "linear", "hidden": [32, 32]},
                     progress=False)
