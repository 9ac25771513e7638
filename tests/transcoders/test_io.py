"""Round trips and hand-written files in the circuit-tracer layout (docs/formats.md, 1)."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import save_file

from cltrace.transcoders import load_transcoder, save_transcoder
from tests.transcoders.tc_helpers import D, F, L, random_transcoder

VARIANTS = [
    (cross, act, skip)
    for cross in (True, False)
    for act in ("jumprelu", "relu", "topk")
    for skip in (False, True)
]


def assert_same(a, b):
    assert a.cfg == b.cfg
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("cross,act,skip", VARIANTS)
def test_round_trip_is_exact(tmp_path, cross, act, skip):
    tc = random_transcoder(cross, act, skip)
    save_transcoder(tc, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    expected = {"W_enc_0.safetensors", "W_dec_2.safetensors"} if cross else {"layer_2.safetensors"}
    assert expected | {"config.yaml"} <= names
    assert_same(load_transcoder(tmp_path), tc)


def test_fp16_files_are_upcast(tmp_path, x_all):
    tc = random_transcoder()
    save_transcoder(tc, tmp_path, dtype=torch.float16)
    back = load_transcoder(tmp_path)
    assert back.W_enc[0].dtype == torch.float32
    assert torch.equal(back.W_dec[1], tc.W_dec[1].half().float())


def _write_clt_by_hand(directory, tc, topk: int | None = None):
    for i in range(L):
        enc = {
            f"W_enc_{i}": tc.W_enc[i].detach().clone(),
            f"b_enc_{i}": tc.b_enc[i].detach().clone(),
            f"b_dec_{i}": tc.b_dec[i].detach().clone(),
        }
        if tc.threshold is not None:
            enc[f"threshold_{i}"] = tc.threshold[i].detach().clone()
        save_file(enc, str(directory / f"W_enc_{i}.safetensors"))
        save_file(
            {f"W_dec_{i}": tc.W_dec[i].detach().clone()}, str(directory / f"W_dec_{i}.safetensors")
        )
    cfg = {
        "model_kind": "cross_layer_transcoder",
        "model_name": "tiny-model",
        "feature_input_hook": "ln2.hook_normalized",
        "feature_output_hook": "hook_mlp_out",
    }
    if topk:
        cfg.update(activation="topk", k=topk)
    (directory / "config.yaml").write_text(yaml.safe_dump(cfg))


def _write_plt_by_hand(directory, tc, transpose_dec=False, listed=False):
    files = []
    for i in range(L):
        w_dec = tc.W_dec[i][:, 0].detach().clone()
        d = {
            "W_enc": tc.W_enc[i].detach().clone(),
            "W_dec": w_dec.T.contiguous() if transpose_dec else w_dec,
            "b_enc": tc.b_enc[i].detach().clone(),
            "b_dec": tc.b_dec[i].detach().clone(),
        }
        if tc.threshold is not None:
            d["activation_function.threshold"] = tc.threshold[i].detach().clone()
        name = f"tc_{i}.safetensors" if listed else f"layer_{i}.safetensors"
        save_file(d, str(directory / name))
        files.append(name)
    cfg = {
        "model_kind": "transcoder_set",
        "model_name": "tiny-model",
        "feature_input_hook": "blocks.0.ln2.hook_normalized",
        "feature_output_hook": "blocks.0.hook_mlp_out",
    }
    if listed:
        cfg["transcoders"] = files
    (directory / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.parametrize("act", ["jumprelu", "relu"])
def test_hand_written_clt_loads(tmp_path, x_all, act):
    tc = random_transcoder(True, act)
    _write_clt_by_hand(tmp_path, tc)
    back = load_transcoder(tmp_path)
    assert back.cfg.activation == act and back.cfg.cross_layer
    torch.testing.assert_close(back.reconstruct(x_all), tc.reconstruct(x_all))


def test_hand_written_topk_clt_loads(tmp_path, x_all):
    tc = random_transcoder(True, "topk", k=3)
    _write_clt_by_hand(tmp_path, tc, topk=3)
    back = load_transcoder(tmp_path)
    assert back.cfg.activation == "topk" and back.cfg.k == 3
    torch.testing.assert_close(back.reconstruct(x_all), tc.reconstruct(x_all))


@pytest.mark.parametrize("transpose_dec,listed", [(False, False), (True, False), (False, True)])
def test_hand_written_plt_loads(tmp_path, x_all, transpose_dec, listed):
    tc = random_transcoder(False, "jumprelu")
    _write_plt_by_hand(tmp_path, tc, transpose_dec=transpose_dec, listed=listed)
    back = load_transcoder(tmp_path)
    assert not back.cfg.cross_layer and back.cfg.activation == "jumprelu"
    torch.testing.assert_close(back.reconstruct(x_all), tc.reconstruct(x_all))
    lazy = load_transcoder(tmp_path, lazy_decoder=True)
    torch.testing.assert_close(lazy.decoder_rows(1, torch.tensor([3, 1])), tc.W_dec[1][[3, 1]])


@pytest.mark.parametrize("cross", [True, False])
def test_lazy_decoder_matches_eager(tmp_path, x_all, cross):
    tc = random_transcoder(cross, "jumprelu", skip=True)
    save_transcoder(tc, tmp_path)
    eager = load_transcoder(tmp_path)
    lazy = load_transcoder(tmp_path, lazy_decoder=True)
    assert lazy.W_dec is None and lazy.lazy is not None
    ids = torch.tensor([15, 0, 1, 2, 7, 7, 9])  # unsorted, repeated, with a contiguous run
    for layer in range(L):
        assert torch.equal(lazy.decoder_rows(layer, ids), eager.decoder_rows(layer, ids))
        assert torch.equal(
            lazy.decoder_rows(layer, torch.tensor([], dtype=torch.long)),
            eager.decoder_rows(layer, torch.tensor([], dtype=torch.long)),
        )
        torch.testing.assert_close(lazy.decoder_norms(layer), eager.decoder_norms(layer))
    torch.testing.assert_close(lazy.reconstruct(x_all), eager.reconstruct(x_all))
    acts = eager.encode_all(x_all)
    for target in range(L):
        torch.testing.assert_close(lazy.decode(acts, target), eager.decode(acts, target))
    # A lazy transcoder saves like an eager one.
    save_transcoder(lazy, tmp_path / "copy")
    assert_same(load_transcoder(tmp_path / "copy"), eager)


def test_save_uses_circuit_tracer_keys(tmp_path):
    tc = random_transcoder(True, "jumprelu", skip=True)
    save_transcoder(tc, tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "W_enc_1.safetensors"), "pt") as f:
        assert set(f.keys()) == {"W_enc_1", "b_enc_1", "b_dec_1", "threshold_1", "W_skip_1"}
        assert f.get_slice("W_enc_1").get_shape() == [F, D]
    with safe_open(str(tmp_path / "W_dec_1.safetensors"), "pt") as f:
        assert f.get_slice("W_dec_1").get_shape() == [F, L - 1, D]
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg["model_kind"] == "cross_layer_transcoder"
    assert cfg["feature_input_hook"] == "ln2.hook_normalized"
