import json

import numpy as np
import pytest
import quantities as pq

import colplugin as cp
from colplugin.params import ParameterError


def test_presets_load_in_internal_units(dl25, pd14):
    assert dl25["tau_m"] == pytest.approx(0.020)
    assert dl25["tau_s"] == pytest.approx(0.0005)
    assert dl25.R == pytest.approx(80.0)  # MOhm = 20 ms / 250 pF
    assert pd14.R == pytest.approx(40.0)
    assert dl25["kappa"][0] == 1.5 and np.all(dl25["kappa"][1:] == 0)
    assert np.all(dl25["K_bg"] == 2510)
    assert list(pd14["K_bg"]) == [1600, 1500, 2100, 1900, 2000, 1900, 2900, 2100]
    assert dl25.default_area == "mt" and pd14.default_area == "pd14"
    # every value documents its source
    for k in dl25:
        assert dl25.source(k)


def test_overrides_with_units():
    p = cp.load_preset("dl25", overrides={"tau_m": "10 ms", "C": 0.25 * pq.nF, "nu_bg": 4})
    assert p["tau_m"] == pytest.approx(0.010)
    assert p["C"] == pytest.approx(250.0)
    assert p["nu_bg"] == 4.0
    assert p.R == pytest.approx(40.0)


@pytest.mark.parametrize("overrides, fragment", [
    ({"tau_m": -1.0}, "tau_m"),
    ({"tau_m": "10 mV"}, "not compatible"),
    ({"connection_probability": np.zeros((7, 8))}, "shape"),
    ({"connection_probability": np.full((8, 8), 1.0)}, "probabilities in [0, 1)"),
    ({"areas.x": [1, 2, 3]}, "areas.x"),
    ({"areas.x": [1, 2, 3, 4, 5, 6, 7, -8]}, "positive population sizes"),
    ({"tau_mem": 0.01}, "did you mean 'tau_m'"),
    ({"inhibition": "dale"}, "layer_ratio"),
    ({"l4e_to_l23e_factor": 30.0}, "lower the factor"),
])
def test_bad_values_are_named(overrides, fragment):
    with pytest.raises(ParameterError, match=None) as info:
        cp.load_preset("dl25", overrides=overrides)
    assert fragment in str(info.value)


def test_unknown_preset_and_area(dl25):
    with pytest.raises(ParameterError, match="unknown preset"):
        cp.load_preset("pd15")
    with pytest.raises(ParameterError, match="unknown area 'v9'"):
        dl25.area_sizes("v9")


def test_user_toml_with_base(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('base = "dl25"\n[tau_m]\nvalue = 10\nunit = "ms"\nsource = "me"\n'
                 '[areas.toy]\nvalue = [100, 30, 100, 30, 100, 30, 100, 30]\n')
    p = cp.load_params(f)
    assert p["tau_m"] == pytest.approx(0.01)
    assert p.source("tau_m") == "me"
    assert p.area_sizes("toy")[1] == 30
    assert p["J_E"] == pytest.approx(0.0878)
    bad = tmp_path / "bad.toml"
    bad.write_text("base = 'dl25'\n[tau_m\n")
    with pytest.raises(ParameterError, match="not valid TOML"):
        cp.load_params(bad)


def test_round_trip_through_json(tmp_path, dl25):
    path = dl25.save(tmp_path / "params.json")
    data = json.loads(path.read_text())
    assert data["tau_m"]["unit"] == "s" and data["tau_m"]["value"] == pytest.approx(0.02)
    assert cp.load_params(path) == dl25


def test_pd14_is_the_one_copy(dl25, pd14):
    # dl25 starts from pd14 (base = "pd14") and changes only what dL25 changes
    np.testing.assert_array_equal(dl25["connection_probability"], pd14["connection_probability"])
    np.testing.assert_array_equal(dl25["K_in"], pd14["K_in"])
    assert dl25.source("connection_probability") == pd14.source("connection_probability")
    # PD14 Table 5: PSC 87.81 pA; dL25 rounds it to 0.0878 nA (the value dL25's code uses)
    assert pd14["J_E"] == pytest.approx(0.08781, rel=1e-12)
    assert dl25["J_E"] == pytest.approx(0.0878, rel=1e-12)
    assert dl25["tau_m"] == pytest.approx(0.020) and pd14["tau_m"] == pytest.approx(0.010)


def test_spiking_entries_in_internal_units(pd14):
    # PD14 Table 5
    assert (pd14["E_L"], pd14["V_reset"], pd14["V_th"]) == (-65.0, -65.0, -50.0)
    assert pd14["t_ref"] == pytest.approx(0.002)
    assert pd14["delay_E"] == pytest.approx(1.5e-3) and pd14["delay_I"] == pytest.approx(0.75e-3)
    assert pd14["J_rel_sd"] == 0.1 and pd14["delay_rel_sd"] == 0.5
    assert list(pd14["published_rates"]) == [0.903, 2.965, 4.414, 5.876, 7.569, 8.633, 1.105, 7.829]
    assert pd14["background"] == "poisson"
    for k in cp.params.SPIKING_KEYS:
        assert pd14.source(k)


def test_missing_spiking_entries_come_from_pd14(dl25):
    data = dl25.to_dict()
    for k in cp.params.SPIKING_KEYS:
        del data[k]
    p = cp.Params.from_dict(data)
    assert p["V_th"] == -50.0 and "pd14 preset" in p.source("V_th")


@pytest.mark.parametrize("overrides, fragment", [
    ({"V_th": -70.0}, "above V_reset"),
    ({"background": "noise"}, "'poisson'"),
    ({"thalamic_size": 2.5}, "whole number"),
    ({"published_rates": [1.0] * 7}, "shape"),
    ({"t_ref": "2 mV"}, "not compatible"),
])
def test_bad_spiking_values(overrides, fragment):
    with pytest.raises(ParameterError) as info:
        cp.load_preset("pd14", overrides=overrides)
    assert fragment in str(info.value)


def test_preset_table_typo_in_user_file(tmp_path):
    f = tmp_path / "typo.toml"
    f.write_text('base = "pd14"\n[V_thr]\nvalue = -52\nunit = "mV"\n')
    with pytest.raises(ParameterError, match="did you mean 'V_th'"):
        cp.load_params(f)


@pytest.mark.parametrize("text", ['tau_m = 10\n', '[tau_m]\nvalue = 10\n', 'tau_m = "10"\n',
                                  '[kappa]\nvalue = [1, 0, 0, 0, 0, 0, 0, 0]\n'])
def test_a_file_states_every_unit(tmp_path, text):
    """One convention in both spellings: a quantity without a unit in a file is an error, never a guess."""
    f = tmp_path / "mine.toml"
    f.write_text('base = "dl25"\n' + text)
    with pytest.raises(ParameterError, match="has no unit") as info:
        cp.load_params(f)
    assert str(f) in str(info.value) and 'unit = "UNIT"' in str(info.value)


def test_dimensionless_entries_need_no_unit(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('base = "dl25"\ng = -5\n[K_bg]\nvalue = [2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000]\n')
    p = cp.load_params(f)
    assert p["g"] == -5 and p["K_bg"][0] == 2000


@pytest.mark.parametrize("text, fragment", [
    ('[tau_m]\nvalue = 10\nunti = "ms"\n', "did you mean 'unit'"),
    ('[preset]\nnmae = "x"\n', "did you mean 'name'"),
    ('[areas.toy]\nvalue = [1, 1, 1, 1, 1, 1, 1, 1]\nsorce = "me"\n', "did you mean 'source'"),
    ('[area.toy]\nvalue = [1, 1, 1, 1, 1, 1, 1, 1]\n', "did you mean 'areas'"),
    ('J_e = "1 nA"\n', "did you mean 'J_E'"),
    ('[areas.toy]\nvalue = [0.5, 1, 1, 1, 1, 1, 1, 1]\n', "whole numbers"),
])
def test_unknown_keys_and_fractional_sizes_in_files(tmp_path, text, fragment):
    f = tmp_path / "mine.toml"
    f.write_text('base = "dl25"\n' + text)
    with pytest.raises(ParameterError, match=fragment):
        cp.load_params(f)


def test_fractional_sizes_refused_in_overrides_and_saved_sets(dl25):
    with pytest.raises(ParameterError, match="whole numbers"):
        cp.load_preset("dl25", overrides={"areas.toy": [100.5, 30, 100, 30, 100, 30, 100, 30]})
    data = dl25.to_dict()
    data["areas"]["mt"]["value"][0] = 0.25
    with pytest.raises(ParameterError, match="areas.mt"):
        cp.Params.from_dict(data)


def test_pd14_adaptation_is_a_named_option():
    """pd14 reads PD14 as non-adapting (kappa = 0); pd14_adapting keeps dL25's 1.5 mV s on L2/3E only."""
    plain, adapting = cp.load_preset("pd14"), cp.load_preset("pd14_adapting")
    assert list(plain["kappa"]) == [0.0] * 8
    assert list(adapting["kappa"]) == [1.5, 0, 0, 0, 0, 0, 0, 0]  # dL25: L2/3E only (mV s)
    assert adapting["tau_m"] == plain["tau_m"] and adapting["J_E"] == plain["J_E"]  # everything else is pd14's
    assert "pd14_adapting" in plain.to_dict()["kappa"]["source"]


def test_a_parameter_file_may_start_from_another_file(tmp_path):
    (tmp_path / "a.toml").write_text('base = "dl25"\ntau_m = "25 ms"\n[preset]\nname = "mine"\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.toml").write_text('base = "../a.toml"\n[kappa]\nvalue = [1, 1, 1, 1, 1, 1, 1, 1]\n'
                                             'unit = "mV*s"\n')
    b = cp.load_params(tmp_path / "sub" / "b.toml")  # relative to the file that names it
    assert b["tau_m"] == pytest.approx(0.025) and b["kappa"][0] == pytest.approx(1.0)  # mV*s, as written
    assert b.name == "mine+b"
    dl25 = cp.load_preset("dl25")
    np.testing.assert_array_equal(b["connection_probability"], dl25["connection_probability"])
    (tmp_path / "loop.toml").write_text('base = "loop.toml"\n')
    with pytest.raises(cp.ParameterError, match="its own base"):
        cp.load_params(tmp_path / "loop.toml")
    (tmp_path / "lost.toml").write_text('base = "nowhere.toml"\n')
    with pytest.raises(cp.ParameterError, match="neither a preset .* nor a parameter file"):
        cp.load_params(tmp_path / "lost.toml")
