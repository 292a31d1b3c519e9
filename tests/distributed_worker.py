"""Run under torchrun by test_distributed.py: what several processes do together, through the
library's own trainer and calibration, written by rank 0 for the test to compare.

    torchrun --nproc_per_node=N distributed_worker.py pause|resume|calibrate OUT
"""

import sys

from safetensors.torch import save_file

from dynscale.data import load_dataset
from dynscale.idp.calibration import calibrate_bn
from dynscale.models import get_model
from dynscale.parallel import barrier, setup, teardown, world
from dynscale.train import TrainConfig, Trainer, get_recipe, load_state, save_state, seed_everything, sized_for

PAUSE_AT = 7  # optimizer steps before the state is saved: mid-epoch (23 steps of 64 per epoch)


def trainer() -> Trainer:
    """The us recipe on an MLP for two epochs of digits (the same in every process)."""
    data = load_dataset("digits")
    seed_everything(0)
    model = get_model("mlp", **sized_for(data, {"hidden": [32, 32]}))
    return Trainer(model, data, TrainConfig(epochs=2, batch_size=64, seed=0), get_recipe("us"), progress=False)


def calibrated(out: str) -> dict:
    """Per-width batch-norm statistics of an untrained small VGG-16, calibrated on digits."""
    data = load_dataset("digits")
    seed_everything(0)
    model = get_model("vgg16", **sized_for(data, {"width_mult": 0.125}))
    calibrate_bn(model, data.loader("train", 100), [0.5, 1.0], progress=False)
    return {k: v for k, v in model.state_dict().items() if "calib_" in k}


def main(mode: str, out: str) -> None:
    setup()
    if mode == "pause":  # train a few steps in N processes, save the state
        t = trainer()
        t.fit(max_steps=PAUSE_AT)
        if world().main:
            save_state(out, t.state_dict(), {})
    elif mode == "resume":  # finish the training saved in OUT.state, save the weights in OUT
        t = trainer()
        t.load_state_dict(load_state(out + ".state")[0])
        t.fit()
        if world().main:
            save_file({k: v.contiguous() for k, v in t.model.state_dict().items()}, out)
    elif mode == "calibrate":
        stats = calibrated(out)
        if world().main:
            save_file({k: v.contiguous() for k, v in stats.items()}, out)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    barrier()
    teardown()


if __name__ == "__main__":
    main(*sys.argv[1:])
