"""The resume check shared by the surrogate tests: interrupted + resumed training == uninterrupted."""
import pytest
import torch

from ldensf_hpc.surrogate import load_checkpoint


def assert_resume_is_exact(train, cfg, data_dir, a, b, checkpoint: str) -> None:
    """Train into ``a`` without a stop and into ``b`` stopped after epoch 1, then resumed: same weights.

    ``train(cfg, data_dir, out_dir, progress=..., callback=...)`` is a training entry point of
    :mod:`ldensf_hpc.surrogate`; ``checkpoint`` is the file name it writes.
    """

    def stop(phase, epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    train(cfg, data_dir, a, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data_dir, b, progress=False, callback=stop)
    assert load_checkpoint(b / checkpoint)["training"]["epoch"] == 2
    train(cfg, data_dir, b, progress=False)
    first, second = (load_checkpoint(d / checkpoint)["state_dict"] for d in (a, b))
    assert all(torch.equal(first[k], second[k]) for k in first)
