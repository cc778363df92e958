"""Issue 18: nothing silently wrong. SNR edge values, corrupt weights and checkpoints, value
scans of broadcast inputs, amp_step's argument errors, and the one-time warnings for a
detector used outside its regime."""
import json
import threading
import warnings

import pytest
import torch

from mimo_fast import cli, comm, detect, ops
from mimo_fast.detect import regime
from mimo_fast.detect.learned import WeightsError, weights
from mimo_fast.eval import SimConfig, montecarlo, simulate
from mimo_fast.ops import validate

SMALL = ["--nr", "2", "--nt", "2", "--mod", "qam4", "--min-errors", "20", "--max-symbols", "400",
         "--batch", "100", "--no-progress"]
TINY_GEPNET = dict(iterations=2, rounds=1, node_size=4, message_hidden=(8, 6), gru_size=6, readout_hidden=(8, 6))


# --- --snr edge values ----------------------------------------------------------------------

@pytest.mark.parametrize("value,match", [
    ("-inf", "-inf is not a finite SNR"),       # was ZeroDivisionError
    ("-400", "-400 dB is outside"),             # was an overflow RuntimeError
    ("nan", "nan is not a finite SNR"),         # was "y has a non-finite value"
    ("inf", "inf is not a finite SNR"),         # was accepted, JSON Infinity
])
def test_snr_edge_values_are_refused_naming_snr(value, match, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(montecarlo, "run_point", lambda *a, **k: pytest.fail("ran a point"))
    out = tmp_path / "o.json"
    assert cli.main(["simulate", *SMALL, "--detector", "lmmse", f"--snr={value}", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--snr" in err and match in err
    assert not out.exists()


def test_snr_checks_in_the_library():
    with pytest.raises(ValueError, match="finite"):
        comm.noise_var_from_snr(float("-inf"), 2, 2)
    with pytest.raises(ValueError, match="finite"):
        comm.noise_var_from_snr(float("inf"), 2, 2)
    dets = {"lmmse": detect.make("lmmse", 4)}
    with pytest.raises(ValueError, match="outside"):
        simulate(dets, 4, SimConfig(nr=2, nt=2, max_symbols=10), [10.0, -400.0], progress=False)


# --- weights ---------------------------------------------------------------------------------

def _saved(tmp_path, **kw):
    torch.manual_seed(0)
    det = detect.make("gepnet", 16, nr=4, nt=2, pretrained=False, **TINY_GEPNET)
    path = tmp_path / "g.safetensors"
    weights.save(det, path, record={"data": {"channel": "rayleigh", "nr": 4, "nt": 2}})
    return det, path


def _rewrite(src, dst, state=None, meta=None):
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(src), framework="pt") as f:
        m, s = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(state(s) if state else s, str(dst), metadata=meta(m) if meta else m)
    return dst


def test_nan_weights_are_refused_naming_file_and_tensor(tmp_path, capsys):
    det, path = _saved(tmp_path)
    name = next(iter(det.state_dict()))

    def poison(s):
        s[name] = torch.full_like(s[name], float("nan"))
        return s
    bad = _rewrite(path, tmp_path / "nan.safetensors", state=poison)
    with pytest.raises(WeightsError, match=rf"nan\.safetensors.*tensor '{name}'.*non-finite"):
        detect.make("gepnet", 16, weights=bad)
    # simulate --weights: a clear error, not SER 0.95
    rc = cli.main(["simulate", "--nr", "4", "--nt", "2", "--mod", "qam16", "--detector", "gepnet",
                   "--weights", str(bad), "--snr", "10", "--max-symbols", "100", "--no-progress"])
    assert rc == 2 and "non-finite" in capsys.readouterr().err


@pytest.mark.parametrize("field,value,match", [
    ("config", "{not json", "'mimo_fast.config' is not valid JSON"),            # was JSONDecodeError
    ("config", "[1, 2]", "'mimo_fast.config' must be a JSON object"),
    ("config", '{"no_such_option": 1}', "'mimo_fast.config' does not build"),   # was TypeError
    ("constellation", '{"name": "qam16"}', "'mimo_fast.constellation' is not"),  # was KeyError
    ("constellation", None, "'mimo_fast.constellation' is missing"),            # was KeyError
    ("nr", '"four"', "'mimo_fast.nr' must be a positive integer"),
    ("record", "{", "'mimo_fast.record' is not valid JSON"),
])
def test_tampered_metadata_raises_weights_error_naming_file_and_field(tmp_path, field, value, match):
    _, path = _saved(tmp_path)

    def tamper(m):
        if value is None:
            m.pop("mimo_fast." + field)
        else:
            m["mimo_fast." + field] = value
        return m
    bad = _rewrite(path, tmp_path / "tampered.safetensors", meta=tamper)
    with pytest.raises(WeightsError, match="tampered.safetensors") as e:
        detect.make("gepnet", 16, weights=bad)
    assert match in str(e.value)


def test_precoder_weights_are_checked_too(tmp_path):
    from mimo_fast.precode import weights as pw
    from mimo_fast.precode.model_gnn import ModelGNN
    path = tmp_path / "p.safetensors"
    pw.save(ModelGNN(), path, n=4, k=2, snr_db=10)
    bad = _rewrite(path, tmp_path / "p_bad.safetensors", meta=lambda m: {**m, "mimo_fast.config": "{x"})
    with pytest.raises(WeightsError, match="p_bad.safetensors.*'mimo_fast.config' is not valid JSON"):
        pw.load(bad)
    nan = _rewrite(path, tmp_path / "p_nan.safetensors",
                   state=lambda s: {k: v.fill_(float("inf")) for k, v in s.items()})
    with pytest.raises(WeightsError, match="p_nan.safetensors.*non-finite"):
        pw.load(nan)


def test_checkpoint_with_nan_optimizer_state_is_refused(tmp_path):
    from mimo_fast.train import checkpoint
    det, _ = _saved(tmp_path)
    state = {"step": 3, "optimizer": {"state": {0: {"exp_avg": torch.tensor([1.0, float("nan")])}}}}
    checkpoint.save(tmp_path / "run", det, state, {})
    with pytest.raises(WeightsError, match=r"last\.state\.pt.*'optimizer\.state\.0\.exp_avg'.*non-finite"):
        checkpoint.load(tmp_path / "run", det)


# --- value scans walk stored, not logical, elements ------------------------------------------

def _within(seconds, fn):
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:   # noqa: BLE001 - handed to the test
            box["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"the value scan took more than {seconds} s (it walks logical elements)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_value_scan_of_a_broadcast_input_costs_its_stored_elements():
    big = torch.ones(1, 1).expand(200000, 200000)      # 4e10 logical elements, 1 stored
    assert _within(10, lambda: validate._first_nonfinite(big)) is None
    _within(10, lambda: validate.positive("lam", big, "ep_lmmse"))
    col = torch.ones(300, 1)
    col[7, 0] = float("nan")
    with pytest.raises(ValueError, match=r"gram has a non-finite value \(nan\) at index \(0, 7, 0\)"):
        _within(10, lambda: validate.finite("gram", col.expand(300, 200000)[None].expand(5, 300, 200000),
                                           "ep_lmmse"))


def test_ep_lmmse_value_checks_of_a_broadcast_input_are_immediate():
    # ep_lmmse's own value checks on a stride-0 (1, 200000, 200000) input: one stored element
    # each, so they finish at once (they spent minutes); the solve itself is the backend's
    K = 200000
    g = torch.ones(1, 1, 1).expand(1, K, K)
    r = torch.ones(1, 1).expand(1, K)
    _within(10, lambda: validate.values("ep_lmmse", [("gram", g), ("rhs", r), ("lam", r), ("gam", r)],
                                        [("lam", r, True)]))
    with pytest.raises(ValueError, match=r"lam must be > 0 everywhere, got -1.0 at index \(0, 0\)"):
        _within(10, lambda: validate.values("ep_lmmse", [("lam", -r)], [("lam", -r, True)]))


# --- amp_step argument errors -----------------------------------------------------------------

def test_amp_step_names_H_for_a_0d_or_real_H():
    z = torch.zeros(2, 3, dtype=torch.complex64)
    x = torch.zeros(2, 4, dtype=torch.complex64)
    v, V = torch.zeros(2, 4), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="amp_step: H must be 3-D"):           # was IndexError
        ops.amp_step(torch.zeros((), dtype=torch.complex64), z, x, v, z, V, 0.1)
    with pytest.raises(TypeError, match="amp_step: H must have dtype torch.complex64"):   # blamed noise_var
        ops.amp_step(torch.zeros(2, 3, 4), z, x, v, z, V, 0.1)


# --- one-time warnings outside a detector's regime ---------------------------------------------

@pytest.fixture
def fresh_warnings():
    regime.reset()
    yield
    regime.reset()


def test_amp_warns_once_when_nr_below_2nt_or_correlated(fresh_warnings):
    amp = detect.make("amp", 16)
    with pytest.warns(regime.RegimeWarning, match="Nr/Nt = 8/8 < 2"):
        regime.check(amp, "amp", nr=8, nt=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        regime.check(amp, "amp", nr=8, nt=8)                   # once per condition
        assert regime.check(amp, "amp", nr=16, nt=8) == []     # in regime: silent
        assert regime.check(detect.make("ep", 16), "ep", nr=8, nt=8, channel="kronecker", rho_rx=0.9) == []
    with pytest.warns(regime.RegimeWarning, match="correlated channel"):
        regime.check(amp, "amp", nr=16, nt=8, channel="kronecker", rho_rx=0.95)
    assert regime.conditions(amp, "amp", nr=16, nt=8, channel="kronecker", rho_rx=0.0) == []


def test_simulate_warns_for_amp_on_a_square_system(fresh_warnings, capsys):
    with pytest.warns(regime.RegimeWarning, match="amp: Nr/Nt"):
        assert cli.main(["simulate", *SMALL, "--detector", "amp", "--snr", "10"]) == 0


def test_learned_detector_warns_outside_its_training_data(fresh_warnings, tmp_path):
    _, path = _saved(tmp_path)
    det = detect.make("gepnet", 16, weights=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert regime.check(det, "gepnet", nr=4, nt=2) == []
    with pytest.warns(regime.RegimeWarning, match="trained on rayleigh .uncorrelated. channels"):
        regime.check(det, "gepnet", nr=4, nt=2, channel="kronecker", rho_rx=0.5, rho_tx=(0.1, 0.4))
    with pytest.warns(regime.RegimeWarning, match="Nr = 4"):
        regime.check(det, "gepnet", nr=6, nt=2)
    with pytest.warns(regime.RegimeWarning, match="trained with Nt = 2"):
        regime.check(det, "gepnet", nr=4, nt=1)
    assert json.dumps(det.record["data"])       # the conditions come from the weights record
