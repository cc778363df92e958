"""The shipped weights (mimo_fast/weights/) load by name, carry their training record, and
beat their classical parent at one SNR on a fixed sample (the committed curves in
experiments/ show the whole comparison): GEPNet against EP, AMP-GNN against AMP (also with
fewer users than trained, through the mask). OAMP-Net2's check is in test_oampnet.py.

Every shipped learned-detector file also gives, on a fixed seeded input, the logits it gave
before the structure options existed (the gnn/gepnet/e2e/ampgnn files were trained with the
legacy structure and their configs lack the options; docs/fidelity.md)."""
import pytest
import torch

from mimo_fast import comm, detect
from mimo_fast.detect.learned import weights
from test_oampnet import system


def ser(det, H, y, nv, idx):
    with torch.no_grad():
        return float((det(y, H, nv).hard != idx).float().mean())


# (learned, parent, nr, nt, order, snr_db, batch, at most this fraction of the parent's SER)
CASES = [
    ("gepnet", "ep", 8, 8, 16, 25.0, 16000, 0.75),    # measured 0.60 (the cavity_skip-only file: 0.85)
    ("ampgnn", "amp", 32, 32, 4, 12.0, 2000, 0.7),
    ("ampgnn", "amp", 32, 24, 4, 10.0, 2000, 0.8),     # a 32-user model serving 24
    ("oampnet", "oamp", 8, 8, 16, 25.0, 16000, 0.8),   # measured 0.64 (2M-symbol simulate run)
]


@pytest.mark.parametrize("name,parent,nr,nt,order,snr,B,ratio", CASES,
                         ids=[f"{c[0]}-{c[2]}x{c[3]}" for c in CASES])
def test_shipped_beats_its_parent(name, parent, nr, nt, order, snr, B, ratio):
    c, H, y, nv, idx = system(B, nr, nt, order, snr, seed=21, dtype=torch.complex64)
    det = detect.make(name, c, nr=nr, nt=nt)
    assert det.record["command"].startswith(f"mimo-fast train {name}") and det.record["wall_clock_s"] > 0
    learned, classical = ser(det, H, y, nv, idx), ser(detect.make(parent, c), H, y, nv, idx)
    assert classical > 0 and learned < ratio * classical, (learned, classical)


# --- the shipped files keep their numbers --------------------------------------------------
# (name, nr, nt, order): (sum of the logits, sum of the logits times linspace(-1, 1), the
# logits of sample 0, user 0), computed by the code before the structure options (commit
# bf89aa4) with MIMO_FAST_BACKEND=reference in float64 on the input of legacy_probe().
LEGACY_LOGITS = {
    ('gepnet', 8, 8, 16): (-65012.56181926551, -38358.468104844265, [
        -4.962360738704845, -3.3798280297071956, -3.4067141273334896, -3.4916201039990433,
        -3.8149503774816367, -2.232417668483987, -2.259303766110281, -2.344209742775835,
        -4.236601804107419, -2.6540690951097705, -2.6809551927360644, -2.765861169401618,
        -3.7566195015352335, -2.1740867925375844, -2.2009728901638788, -2.2858788668294325,
    ]),
    ('e2e', 8, 2, 16): (-51133.25392566837, -14936.310135506657, [
        -8.476846596649608, -7.189781182911236, -84.40999816310907, -31.359131993831966,
        -0.0009629549789860714, -21.967264697335608, -92.66969776801835, -42.18330260950998,
        -67.48395688646251, -118.30870141151969, -157.23776284476918, -122.66590166441387,
        -19.716409841744998, -58.29694672268209, -119.11114238772251, -71.34379000131491,
    ]),
    ('e2e', 8, 8, 16): (-76870.81178228729, -44495.362613610225, [
        -8.505050504221565, -5.180250832603559, -4.67814064504143, -3.919208360127571,
        -6.051435702683772, -2.7301507332056536, -2.305376874173823, -1.4609535441010313,
        -7.686453443381777, -4.3517905407899455, -3.823957197162957, -3.165684898242208,
        -5.734386222406519, -2.5219964924336313, -1.9789415513439166, -1.3220014722874538,
    ]),
    ('ampgnn', 32, 32, 4): (-2385.9048959842403, -24.537398223503413, [
        -6.804161438535332, -0.009427929341836137, -11.59043223614982, -4.795698726956325,
    ]),
    ('oampnet2', 8, 8, 16): (-5132.960493063215, -183.86269733689218, [
        -9.276356759292206, -4.9553669675026395, -4.712807064038933, -3.434183735751549,
        -6.292723627146357, -1.9717338353567897, -1.7291739318930837, -0.4505506036056994,
        -8.72487704297008, -4.403887251180513, -4.161327347716808, -2.882704019429424,
        -6.10889705503898, -1.7879072632494148, -1.5453473597857086, -0.26672403149832413,
    ]),
    # trained after the structure options (OAMPNet has none): its own numbers at shipping
    ('oampnet', 8, 8, 16): (-7580.852824174968, -1885.5768194878588, [
        -8.62345636065407, -4.7867136692226095, -5.306039182766056, -3.6809079432599376,
        -5.512628339556504, -1.6758856481250455, -2.19521116166849, -0.5700799221623735,
        -7.483783193767741, -3.647040502336282, -4.166366015879727, -2.54123477637361,
        -5.13273728392773, -1.295994592496269, -1.8153201060397142, -0.1901888665335973,
    ]),
    ('remimo', 64, 32, 16): (-28942.79804727011, -3893.969550990095, [
        -13.963644736109998, -13.76688482642141, -17.33167805266906, -13.855067132371012,
        -33.584245234437304, -17.54861895419489, -24.72477859699698, -26.870666742872245,
        2.203660945041963, 7.671517947449399, -5.097934348391055, 3.220938425121791,
        -7.18127297289185, -2.241316821857326, -14.368426843594948, -5.766859863306477,
    ]),
}


def legacy_probe(name, nr, nt, order):
    g = torch.Generator().manual_seed(2024)
    B = 3
    c = comm.qam(order)
    H = comm.rayleigh(B, nr, nt, g, torch.complex128)
    idx = c.random_indices((B, nt), g)
    x = c.indices_to_points(idx, H.dtype)
    nv = torch.tensor([comm.noise_var_from_snr(s, nr, nt) for s in (10.0, 16.0, 24.0)], dtype=torch.float64)
    y = comm.awgn((H @ x[..., None])[..., 0], nv, g)
    mask = torch.ones(B, nt, dtype=torch.bool)
    mask[2, -1] = False
    det = detect.make(name, c, nr=nr, nt=nt).double().eval()
    with torch.no_grad():
        lg = det(y, H, nv, mask).logits
    w = torch.linspace(-1.0, 1.0, lg.numel(), dtype=torch.float64).reshape(lg.shape)
    return det, float(lg.sum()), float((lg * w).sum()), lg[0, 0]


def test_every_shipped_detector_file_is_checked():
    files = {f"{n}_{nr}x{nt}_qam{q}.safetensors" for n, nr, nt, q in LEGACY_LOGITS}
    learned = {f for f in weights.shipped() if not f.startswith(("model-gnn", "vanilla-gnn"))}
    assert learned == files


@pytest.mark.parametrize("case", list(LEGACY_LOGITS), ids=[f"{c[0]}-{c[1]}x{c[2]}" for c in LEGACY_LOGITS])
def test_shipped_file_gives_its_logits_from_before_the_structure_options(case):
    """The saved configs lack message_out_act/readout_act/node_sign (gru_attr): the loader
    fills the legacy structure, so every file computes what it computed when it was trained
    (to float64 rounding: the fused ops may sum in another order)."""
    det, total, weighted, row = legacy_probe(*case)
    e_total, e_weighted, e_row = LEGACY_LOGITS[case]
    legacy = getattr(type(det), "LEGACY_STRUCTURE", {})
    cfg = det.config()
    assert {k: cfg[k] for k in legacy} == legacy            # the files are all legacy-structure
    assert total == pytest.approx(e_total, rel=1e-10) and weighted == pytest.approx(e_weighted, rel=1e-9, abs=1e-9)
    torch.testing.assert_close(row, torch.tensor(e_row, dtype=torch.float64), rtol=1e-9, atol=1e-9)
