"""Shallow water on the sphere (the atmosphere case): Williamson test 2, the Galewsky jet, the forcing, the protocol."""
import math

import numpy as np
import pytest

from ldensf_hpc.errors import ConfigError, SolverError
from ldensf_hpc.models.planet_swe import PlanetSWE, PlanetSWEConfig

DAY = 86400.0
NO_FORCING = np.array([[0.0, 1.0]])


def model(**overrides):
    return PlanetSWE(PlanetSWEConfig(**{"nlat": 64, "nlon": 128, "dt": 600.0, "workers": 1, **overrides}))


def lat_lon(m):
    return np.meshgrid(m.lat, m.lon, indexing="ij")


def williamson2(m, tilt):
    """Williamson et al. (1992) test 2: u0 = 2 pi a / 12 days, g h0 = 2.94e4 m^2/s^2, flow tilted by ``tilt``."""
    a, omega, g = m.cfg.radius, m.cfg.rotation, m.cfg.g
    lat, lon = lat_lon(m)
    u0 = 2 * np.pi * a / (12 * DAY)
    u = u0 * (np.cos(lat) * math.cos(tilt) + np.cos(lon) * np.sin(lat) * math.sin(tilt))
    v = -u0 * np.sin(lon) * math.sin(tilt)
    h = -(a * omega * u0 + u0**2 / 2) * (-np.cos(lon) * np.cos(lat) * math.sin(tilt)
                                          + np.sin(lat) * math.cos(tilt)) ** 2 / g
    return np.stack([h, u, v])[None]


@pytest.mark.parametrize("tilt", [0.0, 0.05, math.pi / 2 - 0.05])
def test_williamson2_steady_geostrophic_flow_at_any_tilt(tilt):
    """Day 5 at 64 x 128 (T42): the steady solution kept to a relative height error <= 1e-6 for any tilt of the
    rotation axis (the Coriolis parameter rotated with the flow)."""
    m = model(tilt=tilt, viscosity=0.0, dt=900.0, depth=2.94e4 / 9.80616)
    exact = williamson2(m, tilt)
    state = m.step(m.from_fields(exact), NO_FORCING, int(5 * DAY / m.dt))
    h = m.to_fields(state)[0, 0]
    total = m.cfg.depth + exact[0, 0]
    error = math.sqrt(((h - exact[0, 0]) ** 2 * m.area).sum() / (total**2 * m.area).sum())
    assert error <= 1e-6
    assert m.time(state) == pytest.approx(5 * DAY)


def test_wind_components_are_east_then_north():
    """Fields 1 and 2 are the eastward and northward wind: the vorticity of the tilted solid-body rotation
    zeta = 2 u0 / a (sin lat cos t - cos lat cos lon sin t) yields exactly Williamson 2's (u, v)."""
    m, tilt = model(), 0.7
    exact = williamson2(m, tilt)
    lat, lon = lat_lon(m)
    u0 = 2 * np.pi * m.cfg.radius / (12 * DAY)
    zeta = 2 * u0 / m.cfg.radius * (np.sin(lat) * math.cos(tilt) - np.cos(lat) * np.cos(lon) * math.sin(tilt))
    state = np.zeros((1, 3, m.nalm), complex)
    state[0, 0] = m._analyse(zeta[None], 0, 1)[0]
    fields = m.to_fields(state)[0]
    assert np.abs(fields[1:] - exact[0, 1:]).max() <= 1e-10 * u0
    assert fields[1, m.nlat // 2 - 1, 0] > 0.9 * u0 * math.cos(tilt)  # eastward at the equator under tilt 0.7
    assert np.abs(fields[0]).max() == 0.0


@pytest.mark.parametrize("perturbation", [0.0, 120.0])
def test_galewsky_jet_conserves_mass_and_energy(perturbation):
    """Galewsky et al. (2004) over 5 days at 64 x 128 with the default hyperviscosity: mass to 1e-12, energy drift
    <= 1e-3; the balanced unperturbed jet stays zonal, the perturbed one develops non-zonal vorticity."""
    m = model(perturbation=perturbation)
    start = m.initial_state(NO_FORCING)
    end = m.step(start, NO_FORCING, int(5 * DAY / m.dt))
    before, after = m.integrals(start), m.integrals(end)
    assert abs(after["mass"][0] / before["mass"][0] - 1) <= 1e-12
    assert abs(after["energy"][0] / before["energy"][0] - 1) <= 1e-3
    zeta = m._synth(end[0, 0][None], 0, 1)[0]
    eddies = np.abs(zeta - zeta.mean(axis=1, keepdims=True)).max() / np.abs(zeta).max()
    if perturbation:
        assert eddies > 0.3
    else:
        assert eddies < 1e-12


def test_forcing_integrates_to_zero_and_keeps_mass():
    m = model(nlat=32, nlon=64, dt=1200.0, workers=2)
    params = np.array([[30.0, 1.0], [5.0, 4.0]])
    forcing = m.forcing(params, 12345.0)
    assert np.all(np.abs((forcing * m.area).sum(axis=(1, 2))) <= 1e-14 * (np.abs(forcing) * m.area).sum(axis=(1, 2)))
    spectral = m._forcing_lm(params, 12345.0)  # what the step adds: the m = 1 projection
    analysed = np.stack([m._analyse(f[None], 0, 1)[0] for f in forcing])
    assert np.abs(spectral - analysed).max() <= 1e-12 * np.abs(analysed).max()
    start = m.initial_state(params)
    end = m.step(start, params, 100)
    mass = m.integrals(start)["mass"], m.integrals(end)["mass"]
    assert np.all(np.abs(mass[1] / mass[0] - 1) <= 1e-12)
    heights = m.to_fields(end)[:, 0]
    assert np.abs(heights[0] - heights[1]).max() > 10.0  # the forcing changed the flow, differently per member


def test_members_are_independent_and_the_clock_survives_fields():
    """A batch equals its members run alone; a state rebuilt from its fields (with its clock) continues the same."""
    m = model(nlat=32, nlon=64, dt=1200.0, workers=2)
    params = np.array([[30.0, 1.0], [5.0, 2.0], [15.0, 3.0]])
    state = m.step(m.initial_state(params), params, 30)
    alone = np.concatenate([m.step(m.initial_state(p[None]), p[None], 30) for p in params])
    np.testing.assert_allclose(alone, state, rtol=0, atol=1e-12 * np.abs(state).max())
    rebuilt = m.with_clock(m.from_fields(m.to_fields(state)), state)
    assert m.time(rebuilt) == m.time(state) == 30 * 1200.0
    np.testing.assert_allclose(m.to_fields(m.step(rebuilt, params, 10)), m.to_fields(m.step(state, params, 10)),
                               rtol=0, atol=1e-8)


def test_unstable_step_and_nan_are_reported():
    m = model(nlat=32, nlon=64, dt=5000.0)
    with pytest.raises(SolverError, match="CFL .* lower atmosphere.dt below"):
        m.step(m.initial_state(NO_FORCING), NO_FORCING, 1)
    bad = m.initial_state(NO_FORCING)
    bad[0, 2, 3] = np.nan
    with pytest.raises(SolverError, match="member 0 became NaN"):
        model(nlat=32, nlon=64).step(bad, NO_FORCING, 1)


@pytest.mark.parametrize("setting, match", [({"lmax": 50}, "lmax must be in"), ({"dt": 0.0}, "dt must be"),
                                            ({"sigma_min": 0.0}, "sigma_min"), ({"mountain_height": 2e4}, "mountain"),
                                            ({"initial_flow": "era5"}, "initial_flow must be one of")])
def test_bad_settings_are_refused(setting, match):
    with pytest.raises(ConfigError, match=match):
        model(nlat=32, nlon=64, **setting)


def test_flow_over_a_mountain_conserves_mass_and_energy():
    """Williamson 2's flow over the smooth mountain for one day: mass to 1e-12, energy drift <= 1e-4 (no viscosity)."""
    m = model(viscosity=0.0, mountain_height=2000.0, depth=5960.0)
    start = m.from_fields(williamson2(m, 0.0))
    end = m.step(start, NO_FORCING, int(DAY / m.dt))
    before, after = m.integrals(start), m.integrals(end)
    assert abs(after["mass"][0] / before["mass"][0] - 1) <= 1e-12
    assert abs(after["energy"][0] / before["energy"][0] - 1) <= 1e-4
    assert np.abs(m.to_fields(end)[0, 2]).max() > 1.0  # the mountain deflects the flow northward / southward
