"""LDNet: Euler latent dynamics, off-grid reconstruction, two-stage training, checkpoints, resume.

Trained on a tiny analytic dataset (test_dataset.write_gaussian_dataset: a travelling
Gaussian bump and its square on a 12 x 12 grid, the parameter is the bump's start).
"""
import copy

import numpy as np
import pytest
import torch
from test_dataset import gaussian_fields, write_gaussian_dataset

from ldensf_hpc.cases import load_config
from ldensf_hpc.config import LDNetConfig
from ldensf_hpc.data.dataset import Normalization
from ldensf_hpc.errors import ConfigError, DataError
from ldensf_hpc.surrogate import load, load_checkpoint
from ldensf_hpc.surrogate.euler_rollout import FUSED_ROLLOUTS
from ldensf_hpc.geometry import get as geometry
from ldensf_hpc.surrogate.ldnet import ACTIVATIONS, Climatology, LDNet, train_ldnet

TINY_LDNET = ["ldnet.latent=4", "ldnet.dyn_depth=2", "ldnet.dyn_width=32", "ldnet.rec_depth=3",
              "ldnet.rec_width=64", "ldnet.fourier_features=0", "ldnet.activation=gelu",
              "ldnet.frame_every=2", "ldnet.dt_hat=0.5", "ldnet.batch_size=2", "ldnet.lr=6.0e-3",
              "ldnet.retrain_lr=3.0e-4", "data.points_per_frame=144", "data.seed=0", "train.seed=0",
              "train.patience=1000", "train.device=cpu"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_config(*extra):
    return load_config("tiny", case="swe", overrides=TINY_LDNET + list(extra))


class Interrupt(Exception):
    pass


def interrupt_at(phase, epoch, calls):
    def callback(p, e):
        calls.append((p, e))
        if (p, e) == (phase, epoch):
            raise Interrupt

    return callback


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train to convergence, interrupted after the last joint epoch so stage two can be checked."""
    root = tmp_path_factory.mktemp("ldnet")
    write_gaussian_dataset(root / "data", n_trajectories=10, n_frames=5, n=12, n_params=1)
    cfg = tiny_config("ldnet.epochs=150", "ldnet.retrain_epochs=50")
    with pytest.raises(Interrupt):
        train_ldnet(cfg, root / "data", root / "out", progress=False, callback=interrupt_at("joint", 149, []))
    before = load_checkpoint(root / "out" / "ldnet.pt")["training"]["best_state"]  # weights entering stage two
    calls = []
    summary = train_ldnet(cfg, root / "data", root / "out", progress=False, callback=lambda p, e: calls.append((p, e)))
    return root, cfg, summary, before, calls


def test_overfits_tiny_dataset_below_one_percent(trained):
    summary, calls = trained[2], trained[4]
    assert summary["train_rel_error"] < 0.01, summary
    assert summary["val_rel_error"] < 0.02, summary  # interpolates between nearby parameters
    joint, retrain = summary["history"]["joint"], summary["history"]["retrain"]
    assert joint[-1]["val"] < 1e-2 * joint[0]["val"]
    assert min(h["val"] for h in retrain) <= min(h["val"] for h in joint)  # stage two does not lose accuracy
    assert calls == [("retrain", e) for e in range(50)]  # the rerun only did stage two


def test_stage_two_leaves_dynamics_network_bitwise_unchanged(trained):
    root, _, _, before, _ = trained
    after = load(root / "out" / "ldnet.pt").state_dict()
    dyn = [k for k in after if k.startswith("dynamics_net.")]
    rec = [k for k in after if k.startswith("reconstruction_net.")]
    assert dyn and rec
    assert all(torch.equal(after[k], before[k]) for k in dyn)
    assert not all(torch.equal(after[k], before[k]) for k in rec)


def test_reconstruction_off_grid_and_continuous(trained):
    root, *_ = trained
    model = load(root / "out" / "ldnet.pt").double()
    u_phys = np.array([[0.45]])
    with torch.no_grad():
        s = model.rollout(torch.as_tensor(model.norm.scale_params(u_phys)), 3)[0]  # frames 0, 2, 4
    # cell centres of the 12 x 12 grid: never seen in training
    h = 1.0 / 11
    c = np.arange(11) * h + h / 2
    X, Y = np.meshgrid(c, c)
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    pred = model.fields_at(s, pts).numpy()  # (3, M, 2)
    for k, t in enumerate((0, 2, 4)):
        true = gaussian_fields(u_phys, t + 1, c, c)[0, t].reshape(2, -1).T
        assert np.linalg.norm(pred[k] - true) / np.linalg.norm(true) < 0.03
    # continuity: the change is proportional to a small move of xi
    xi = torch.tensor([[0.1, -0.2]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    with torch.no_grad():
        base = model.reconstruct(s[1], xi)
        change = [(model.reconstruct(s[1], xi + eps * d) - base).abs().max().item() for eps in (1e-3, 1e-4, 1e-5)]
    assert 0 < change[0] < 0.05
    assert 5 < change[0] / change[1] < 20 and 5 < change[1] / change[2] < 20


def test_grid_layout_matches_pointwise_evaluation(trained):
    root, *_ = trained
    model = load(root / "out" / "ldnet.pt")
    s = torch.randn(2, model.latent)
    x, y = np.linspace(0, 1, 5), np.linspace(0, 1, 3)
    grid = model.fields_on_grid(s, x, y)  # (2, F, ny, nx)
    assert grid.shape == (2, 2, 3, 5)
    point = model.fields_at(s, [[x[4], y[1]]])  # (2, 1, F)
    torch.testing.assert_close(grid[:, :, 1, 4], point[:, 0], rtol=1e-6, atol=1e-6)


def _model(seed=0, n_params=2, **kw):
    torch.manual_seed(seed)
    cfg = LDNetConfig(**{"latent": 3, "dyn_depth": 2, "dyn_width": 8, "rec_depth": 3, "rec_width": 16,
                         "fourier_features": 4, **kw})
    norm = Normalization((0.0, 1.0), (1.0, 2.0), (0.0, -1.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0))
    return LDNet(cfg, n_params, 2, norm, ("a", "b"), ("p", "q"))


@pytest.mark.parametrize("chunk", [1, 7, 16, 50, 1 << 11])
def test_chunked_fields_equal_one_evaluation(chunk):
    """States and points split into chunks of (state, point) pairs (ragged last ones included)
    give exactly the fields of one evaluation of R on every pair."""
    model = _model().double()
    s = torch.randn(5, model.latent, dtype=torch.float64)
    pts = np.random.default_rng(0).uniform(0, 1, (23, 2))
    want = model.norm.unstandardize(model.reconstruct(s, model.norm.scale_xi(torch.as_tensor(pts))), axis=-1)
    torch.testing.assert_close(model.fields_at(s, pts, chunk_points=chunk), want.detach(), rtol=1e-13, atol=1e-13)


def test_rollout_is_explicit_euler_from_zero():
    """To float64 round-off (the fused CPU rollout sums in another order than torch's matmuls)."""
    model = _model(dt_hat=0.1).double()
    u = torch.rand(4, 2, dtype=torch.float64)
    s = model.rollout(u, 3)
    assert s.shape == (4, 3, 3)
    ref = torch.zeros(4, 3, dtype=torch.float64)
    for t in range(3):
        ref = ref + 0.1 * model.dynamics(ref, u)  # eq. 14 with s_{-1} = 0
        torch.testing.assert_close(s[:, t], ref, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(model.step(s[:, 1], u), s[:, 2], rtol=1e-13, atol=1e-15)
    u_t = torch.rand(4, 3, 2, dtype=torch.float64)  # a time-varying parameter drives each step with u_{t-1}
    s_t = model.rollout(u_t, 3)
    torch.testing.assert_close(s_t[:, 1], model.step(model.step(torch.zeros(4, 3, dtype=torch.float64), u_t[:, 0]),
                                                     u_t[:, 1]), rtol=1e-13, atol=1e-15)


def test_rollout_keeps_fp32_under_bf16_autocast():
    """The latent Euler steps are not autocast: under bf16 the rollout is the fp32 one, bit for bit,
    while R's output is bf16."""
    model = _model(dt_hat=0.1)
    u, xi = torch.rand(4, 2), torch.rand(5, 2) * 2 - 1
    s = model.rollout(u, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s_bf16 = model.rollout(u, 6)
        fields = model.reconstruct(s_bf16, xi)
    assert s_bf16.dtype == torch.float32 and fields.dtype == torch.bfloat16
    torch.testing.assert_close(s_bf16, s, rtol=0, atol=0)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("per_step_u", [False, True])
def test_fused_rollout_equals_autograd_rollout_with_gradients(activation, depth, per_step_u, monkeypatch):
    """The fused Numba rollout and its hand-written adjoint give the states and the gradients (F's weights
    and ``u``) of autograd through the Euler steps to float64 round-off, for every activation."""
    model = _model(activation=activation, dyn_depth=depth, dt_hat=0.3).double()
    u = torch.rand(3, 7, 2, dtype=torch.float64) if per_step_u else torch.rand(3, 2, dtype=torch.float64)
    weights = torch.randn(3, 7, model.latent, dtype=torch.float64)

    def states_and_gradients():
        x = u.clone().requires_grad_(True)
        model.zero_grad()
        s = model.rollout(x, 7)
        (s * weights).sum().backward()
        return [s.detach(), x.grad, *(p.grad for p in model.dynamics_net.parameters())]

    fused = states_and_gradients()
    monkeypatch.delitem(FUSED_ROLLOUTS, "cpu")
    reference = states_and_gradients()
    assert reference[0].abs().max() > 0.01 and all(g.abs().max() > 0 for g in reference[1:])
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _sphere_points(n_lat=12, n_lon=24):
    lon, lat = np.meshgrid(np.arange(n_lon) * 360 / n_lon, np.linspace(-80, 80, n_lat))
    return np.stack([lon.ravel(), lat.ravel()], axis=1)


def test_climatology_fits_polynomials_of_its_degree_exactly_and_scales_by_the_anomaly():
    """On the sphere a field of degree <= L in the unit vector (sin^2 lat, cos lat cos lon sin lat) is
    the fit's mean to round-off, a degree-3 one (sin^3 lat) is not at L = 2; ``scale`` is the std of
    the frames about the fit (here the +-0.1 offset of two trajectories)."""
    pts = _sphere_points()
    xi = torch.as_tensor(geometry("sphere").features(pts))
    lat, lon = np.radians(pts[:, 1]), np.radians(pts[:, 0])
    field = np.stack([np.sin(lat) ** 2, np.cos(lat) * np.cos(lon) * np.sin(lat), np.sin(lat) ** 3], axis=1)
    frames = torch.as_tensor(field)[None, None].repeat(2, 3, 1, 1)
    frames[0] += 0.1
    frames[1] -= 0.1
    clim = Climatology(2, 3, 3).double()
    clim.fit(xi, frames)
    misfit = (clim(xi) - torch.as_tensor(field)).abs().max(dim=0).values
    assert misfit[0] < 1e-12 and misfit[1] < 1e-12 and misfit[2] > 1e-2
    n = frames[..., 0].numel()
    assert abs(float(clim.scale[0]) - 0.1 * np.sqrt(n / (n - 1))) < 1e-12  # the unbiased std of +-0.1


def test_ldnet_with_climatology_adds_it_to_the_scaled_network_and_keeps_it_in_checkpoints(tmp_path):
    model = _model(seed=4, climatology=3)
    clim = model.climatology
    clim.coeffs.normal_()
    clim.scale.copy_(torch.tensor([0.5, 2.0]))
    s, xi = torch.randn(4, model.latent), torch.rand(6, 2) * 2 - 1
    bare = copy.deepcopy(model)
    bare.climatology = None
    torch.testing.assert_close(model.reconstruct(s, xi), clim(xi) + clim.scale * bare.reconstruct(s, xi))
    torch.save(model.to_checkpoint(), tmp_path / "m.pt")
    assert torch.equal(load(tmp_path / "m.pt").reconstruct(s, xi), model.reconstruct(s, xi))


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    model = _model(seed=3).eval()
    torch.save(model.to_checkpoint(), tmp_path / "m.pt")
    loaded = load(tmp_path / "m.pt")
    assert isinstance(loaded, LDNet) and not loaded.training
    assert loaded.field_names == ("a", "b") and loaded.norm == model.norm
    u = torch.rand(5, 2)
    xi = torch.rand(7, 2) * 2 - 1
    with torch.no_grad():
        a, b = (m.reconstruct(m.rollout(u, 4), xi[None, None]) for m in (model, loaded))
    assert a.shape == (5, 4, 7, 2) and torch.equal(a, b)
    assert torch.equal(model.fields_on_grid(model.step(torch.zeros(5, 3), u), [0, 0.5], [0, 1]),
                       loaded.fields_on_grid(loaded.step(torch.zeros(5, 3), u), [0, 0.5], [0, 1]))


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path):
    write_gaussian_dataset(tmp_path / "data", n_trajectories=5, n_frames=3, n=8, n_params=2)
    cfg = tiny_config("ldnet.epochs=3", "ldnet.retrain_epochs=2", "data.points_per_frame=20")
    ref = train_ldnet(cfg, tmp_path / "data", tmp_path / "a", progress=False)
    with pytest.raises(Interrupt):
        train_ldnet(cfg, tmp_path / "data", tmp_path / "b", progress=False, callback=interrupt_at("joint", 0, []))
    assert load_checkpoint(tmp_path / "b" / "ldnet.pt")["training"]["epoch"] == 1
    calls = []
    resumed = train_ldnet(cfg, tmp_path / "data", tmp_path / "b", progress=False,
                          callback=lambda p, e: calls.append((p, e)))
    assert calls == [("joint", 1), ("joint", 2), ("retrain", 0), ("retrain", 1)]  # continues at epoch 2 of 3
    a, b = (load(tmp_path / d / "ldnet.pt").state_dict() for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["history"] == ref["history"] and resumed["test_rel_error"] == ref["test_rel_error"]
    # a finished run is not trained again; another configuration is refused
    calls.clear()
    train_ldnet(cfg, tmp_path / "data", tmp_path / "b", progress=False, callback=lambda p, e: calls.append(p))
    assert calls == []
    with pytest.raises(DataError, match="another configuration"):
        train_ldnet(tiny_config("ldnet.epochs=4"), tmp_path / "data", tmp_path / "b", progress=False)


def test_bf16_training_is_recorded_and_a_resume_at_another_precision_refused(tmp_path):
    """train.precision bf16 autocasts the forward passes (a Linear inside gives bfloat16, fp32 outside);
    it learns (val loss down by a quarter) to within 5 % of fp32's test error, the checkpoint says bf16 and
    fp32 cannot resume it;
    tf32 is refused on the CPU, an unknown name anywhere, each in one line before any data is read."""
    from ldensf_hpc.errors import BackendError
    from ldensf_hpc.surrogate.training import arithmetic

    layer = torch.nn.Linear(3, 2)
    with arithmetic("bf16", torch.device("cpu")):
        assert layer(torch.ones(1, 3)).dtype == torch.bfloat16
    assert layer(torch.ones(1, 3)).dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"
    write_gaussian_dataset(tmp_path / "data", n_trajectories=5, n_frames=3, n=8, n_params=2)
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = tiny_config("ldnet.epochs=20", "ldnet.retrain_epochs=1", "data.points_per_frame=20",
                          f"train.precision={precision}")
        runs[precision] = train_ldnet(cfg, tmp_path / "data", tmp_path / precision, progress=False)
    fp32, bf16 = runs["fp32"], runs["bf16"]
    val = [e["val"] for e in bf16["history"]["joint"]]
    assert min(val) < 0.75 * val[0] and bf16["history"] != fp32["history"]  # it learns, in other arithmetic
    assert abs(bf16["test_rel_error"] - fp32["test_rel_error"]) < 0.05 * fp32["test_rel_error"]
    assert load_checkpoint(tmp_path / "bf16" / "ldnet.pt")["precision"] == "bf16"
    with pytest.raises(DataError, match="trained in bf16, this run asks fp32"):
        train_ldnet(tiny_config("ldnet.epochs=20", "ldnet.retrain_epochs=1", "data.points_per_frame=20",
                                "train.precision=fp32"), tmp_path / "data", tmp_path / "bf16", progress=False)
    with pytest.raises(BackendError, match="train.precision tf32 needs a CUDA device"):
        train_ldnet(tiny_config("train.precision=tf32"), "/nonexistent", "/nonexistent", progress=False)
    with pytest.raises(ConfigError, match="train.precision 'fp8' is unknown"):
        train_ldnet(tiny_config("train.precision=fp8"), "/nonexistent", "/nonexistent", progress=False)


def test_gradient_clipping_is_recorded_and_a_bound_never_reached_changes_nothing(tmp_path):
    """ldnet.clip_norm: a bound above every gradient norm trains bit for bit as no clipping and clips no
    step; a bound below every norm clips every step (history "clipped": 1) and so trains other weights."""
    write_gaussian_dataset(tmp_path / "data", n_trajectories=5, n_frames=3, n=8, n_params=2)
    runs = {}
    for clip in (0, 1e6, 1e-6):
        cfg = tiny_config("ldnet.epochs=4", "ldnet.retrain_epochs=2", "data.points_per_frame=20",
                          f"ldnet.clip_norm={clip}")
        summary = train_ldnet(cfg, tmp_path / "data", tmp_path / str(clip), progress=False)
        runs[clip] = summary, load(tmp_path / str(clip) / "ldnet.pt").state_dict()
    assert all("clipped" not in e for e in runs[0][0]["history"]["joint"])
    for clip, fraction in ((1e6, 0.0), (1e-6, 1.0)):
        history = runs[clip][0]["history"]
        assert [e["clipped"] for phase in ("joint", "retrain") for e in history[phase]] == [fraction] * 6
    assert all(torch.equal(v, runs[1e6][1][k]) for k, v in runs[0][1].items())
    assert not all(torch.equal(v, runs[1e-6][1][k]) for k, v in runs[0][1].items())


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="activation"):
        _model(activation="swish")
    with pytest.raises(ConfigError, match="dt_hat"):
        _model(dt_hat=0.0)
    cfg = copy.deepcopy(tiny_config())
    cfg.train.patience = 0
    with pytest.raises(ConfigError, match="patience"):
        train_ldnet(cfg, "/nonexistent", "/nonexistent", progress=False)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    """Per-step schedule of a phase: (k + 1) / warm for the first 10 % of 4 x 25 steps, then
    min + (1 - min)(1 + cos(pi k / total)) / 2, reaching min_lr_ratio at the last step."""
    from ldensf_hpc.surrogate.training import Phase

    phase = Phase("joint", [], 4, 1.0, None, None, None, steps_per_epoch=25, warmup=0.1)
    factor = phase.schedule(0.01)
    assert factor(0) == pytest.approx(0.1 * (0.505 + 0.495 * np.cos(0.0)))
    assert [factor(k) < factor(k + 1) for k in range(9)] == [True] * 9
    tail = [factor(k) for k in range(10, 101)]
    assert np.all(np.diff(tail) < 0) and factor(100) == pytest.approx(0.01)
    assert factor(50) == pytest.approx(0.01 + 0.99 * 0.5)
