"""The rate-vs-spiking validation at a tiny scale: report, seeds, bad input refused up front."""

import json

import pytest

from colplugin.analysis.validation import validate_microcircuit, validate_stimulus


def test_validate_microcircuit_two_seeds_nest(tmp_path):
    pytest.importorskip("nest")
    r = validate_microcircuit(tmp_path, scale=0.01, duration=0.7, transient=0.2, k_scale=0.3, seed=4, seeds=2,
                              backend="nest", progress=False, nix_neurons=5)
    assert r["seeds"] == [4, 5]
    rows = json.loads((tmp_path / "comparison.json").read_text())
    for row in rows:
        per_seed = row["spiking_rates_per_seed"]
        assert len(per_seed) == 2
        assert row["spiking_rate"] == pytest.approx(sum(per_seed) / 2)
        assert row["spiking_rate_seed_sd"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)
    md = (tmp_path / "report.md").read_text()
    assert "seeds [4, 5]" in md and "±" in md
    # both readings of pd14's adaptation are reported: kappa = 0 and dL25's 1.5 mV s on L2/3E only
    assert "pd14_adapting" in md
    assert rows[0]["dmf_adapting_rate"] < rows[0]["dmf_rate"]  # adaptation lowers L2/3E's rate
    r0 = rows[0]
    assert r0["dmf_adapting_vs_spiking"] == pytest.approx(r0["dmf_adapting_rate"] / r0["spiking_rate"] - 1)
    for f in ("rates.png", "spiking.nix", "dmf.nix"):
        assert (tmp_path / f).stat().st_size > 0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"seeds": 0}, "seeds"), ({"backend": "neuron"}, "backend"), ({"duration": 0.3, "transient": 0.5}, "transient"),
    ({"scale": 2.0}, "scale"),
])
def test_validate_microcircuit_refuses_bad_input(tmp_path, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_microcircuit(tmp_path / "v", progress=False, **kwargs)
    assert not (tmp_path / "v").exists()  # nothing written


def test_validate_stimulus_nest(tmp_path):
    pytest.importorskip("nest")
    r = validate_stimulus(tmp_path, scale=0.01, rate=15.0, duration=0.8, t_on=0.4, k_scale=0.3, backend="nest")
    assert len(r["rows"]) == 8 and 0 <= r["directions_agree"] <= 8
    # the DMF's L4E rises with thalamic input
    assert [row for row in r["rows"] if row["population"] == "L4E"][0]["dmf_change_hz"] > 0
    with pytest.raises(ValueError, match="t_on"):
        validate_stimulus(tmp_path / "bad", duration=0.8, t_on=0.7, backend="nest")


def test_validate_microcircuit_judges_the_lif_column(tmp_path):
    pytest.importorskip("nest")
    r = validate_microcircuit(tmp_path, scale=0.01, duration=0.7, transient=0.2, k_scale=0.3, seed=4, seeds=1,
                              backend="nest", progress=False, nix_neurons=5, preset="pd14_lif")
    assert r["preset"] == "pd14_lif" and "within30" not in r
    dev = [abs(row["lif_rate"] / row["spiking_rate"] - 1) for row in r["rows"]]
    assert r["lif_mean_deviation"] == pytest.approx(sum(dev) / 8)
    assert r["lif_mean_within10"] == (r["lif_mean_deviation"] <= 0.1)
    assert r["lif_each_within25"] == (max(dev) <= 0.25)
    assert (tmp_path / "lif_column.nix").stat().st_size > 0
    assert "LIF column" in (tmp_path / "report.md").read_text()


def test_validate_microcircuit_refuses_an_unknown_column(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        validate_microcircuit(tmp_path / "v", progress=False, preset="dl25")
    assert not (tmp_path / "v").exists()


def test_validation_settings_are_checked_once_and_frozen(tmp_path):
    """A ValidationSettings is checked when made (before any work), cannot change, and keywords replace its fields."""
    import dataclasses

    from colplugin.analysis.validation import StimulusValidationSettings, ValidationSettings

    s = ValidationSettings(seeds=2)
    assert s.device == "cpp_standalone"  # the backend's default device, stored resolved
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seeds = 0
    with pytest.raises(ValueError, match="transient"):
        dataclasses.replace(s, duration=0.55)  # a new object is checked again
    with pytest.raises(ValueError, match="t_on"):
        StimulusValidationSettings(duration=0.8, t_on=0.7)
    with pytest.raises(ValueError, match="rate"):
        StimulusValidationSettings(rate=-1.0)
    with pytest.raises(TypeError, match="ValidationSettings"):
        validate_microcircuit(tmp_path / "v", StimulusValidationSettings())
    with pytest.raises(ValueError, match="seeds"):  # a field keyword replaces the given settings' field, checked
        validate_microcircuit(tmp_path / "v", s, progress=False, seeds=0)
    assert not (tmp_path / "v").exists()


def test_a_negative_transient_is_named():
    from colplugin.analysis.validation import ValidationSettings

    with pytest.raises(ValueError, match="transient must be a time >= 0"):
        ValidationSettings(transient=-1.0)
