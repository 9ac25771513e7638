"""A model spread by accelerate's device map (some blocks, the final norm and the unembedding
offloaded to disk, so accelerate's hooks load their weights for each forward pass) gives the
same logits, attribution graphs and PIE stage-I scores and removals as the same model loaded
whole."""

from __future__ import annotations

import pytest
import torch

from cltrace.errors import UsageError
from cltrace.graph.attribute import attribute
from cltrace.models import load_model
from cltrace.models.offload import param
from cltrace.pie.run import PieConfig, score_prompt
from cltrace.prune import PruneConfig, compute_components
from cltrace.testing import random_transcoder, save_model, tiny_model
from tests.prune.conftest import PAIR

pytest.importorskip("accelerate")

DISK_BLOCKS = (1, 2)


def disk_map(adapter, disk_blocks=DISK_BLOCKS) -> dict[str, str]:
    """Every top-level module of ``adapter``'s model and each block on the CPU, except the
    ``disk_blocks``, the final norm and an untied unembedding, which go to disk."""
    blocks = adapter.family.blocks
    # an unembedding tied to the embedding stays with it (accelerate loads a tied weight from
    # the module that owns it)
    tied = adapter.hf_model.config.tie_word_embeddings
    to_disk = (adapter.family.final_norm, *(() if tied else ("lm_head",)))
    out: dict[str, str] = {}

    def walk(prefix: str, module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            full = prefix + name
            if full == blocks:
                out.update({f"{full}.{i}": "disk" if i in disk_blocks else "cpu"
                            for i in range(len(child))})  # fmt: skip
            elif blocks.startswith(full + "."):
                walk(full + ".", child)
            else:
                out[full] = "disk" if full in to_disk else "cpu"

    walk("", adapter.hf_model)
    return out


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def loaded(request, tmp_path_factory):
    """``(plain, spread, transcoder)``: one saved tiny model of 4 layers loaded whole and
    loaded with part of it on disk."""
    root = tmp_path_factory.mktemp(f"devmap-{request.param}")
    source = tiny_model(request.param, n_layers=4)
    save_model(source, root / "model")
    plain = load_model(root / "model")
    spread = load_model(root / "model", device_map=disk_map(plain), offload_folder=root / "off")
    tc = random_transcoder(plain, d_features=24, skip=request.param == "gpt2")
    return plain, spread, tc


def _forward_attrs(spread) -> list:
    return [m.__dict__.get("forward") for m in spread.hf_model.modules()]


def test_weights_are_really_offloaded(loaded):
    plain, spread, _ = loaded
    for layer in DISK_BLOCKS:
        norm = next(iter(spread.norm_modules(layer).values()))
        assert norm.weight.device.type == "meta"  # accelerate loads it for each pass
        want = param(next(iter(plain.norm_modules(layer).values())))
        assert torch.equal(param(norm), want)
    assert spread.final_norm().weight.device.type == "meta"
    assert torch.equal(spread.W_U, plain.W_U)
    assert spread.device == torch.device("cpu")


def test_logits_and_patched_passes_equal_the_whole_model(loaded):
    plain, spread, _ = loaded
    tokens = plain.to_tokens(PAIR.clean)
    wrappers = _forward_attrs(spread)
    assert any(w is not None for w in wrappers)  # accelerate's hooks replace forward
    with torch.no_grad():
        assert torch.allclose(spread(tokens), plain(tokens), atol=1e-5)
        add = torch.randn(plain.d_model, generator=torch.Generator().manual_seed(0))
        out = []
        for adapter in (plain, spread):
            with adapter.cache(["resid_post.1"]) as c:
                adapter(tokens)
            with adapter.resume_after(1, c["resid_post.1"]), adapter.patch("mlp_out.2", add=add), \
                    adapter.last_position_mlp(), adapter.fused_activations():
                out.append(adapter.last_logits(tokens))
        assert (out[0] - plain(tokens)[:, -1]).abs().max() > 1e-3  # the patch did something
    assert torch.allclose(out[1], out[0], atol=1e-5)
    # every instance forward is what it was: accelerate's wrappers, not popped nor stacked
    assert all(a is b for a, b in zip(_forward_attrs(spread), wrappers, strict=True))


def test_attribution_graph_equals_the_whole_model(loaded):
    plain, spread, tc = loaded
    want = attribute(plain, tc, PAIR.clean)
    got = attribute(spread, tc, PAIR.clean)
    assert got.adjacency.shape == want.adjacency.shape
    assert torch.equal(got.activations, want.activations) or torch.allclose(
        got.activations, want.activations, atol=1e-5
    )
    assert torch.allclose(got.adjacency.float(), want.adjacency.float(), atol=1e-5)
    assert want.adjacency.abs().max() > 1e-3


def test_pie_stage_one_equals_the_whole_model(loaded):
    plain, spread, tc = loaded
    cfg = PieConfig(methods=("fap", "random"), prune=PruneConfig(budgets=(2, 5), random_seeds=2),
                    interpret_method="fap", interpret_budget=5)  # fmt: skip
    want = score_prompt(0, PAIR, plain, tc, cfg)
    got = score_prompt(0, PAIR, spread, tc, cfg)
    assert [r["method"] for r in got["results"]] == [r["method"] for r in want["results"]]
    compared = 0
    for g, w in zip(got["results"], want["results"], strict=True):
        assert (g["method"], g["budget"], g["seed"]) == (w["method"], w["budget"], w["seed"])
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-5, abs=1e-5, nan_ok=True), key
                compared += 1
    assert compared >= 2 * len(want["results"])  # retention figures, not only labels
    # the kept occurrences with their FAP scores: [layer, feature, position, score]
    assert len(want["interpret_kept"]) == 5
    for g, w in zip(got["interpret_kept"], want["interpret_kept"], strict=True):
        assert g[:3] == w[:3] and g[3] == pytest.approx(w[3], rel=1e-5, abs=1e-5)


def test_removals_and_recorded_bases_equal_the_whole_model(loaded):
    plain, spread, tc = loaded
    comps = {a: compute_components(a, tc, PAIR) for a in (plain, spread)}
    cw, cs = comps[plain], comps[spread]
    assert torch.equal(cs.layer, cw.layer) and torch.equal(cs.feature, cw.feature)
    n = cw.n
    g = torch.Generator().manual_seed(1)
    singles = torch.zeros(6, n, dtype=torch.bool)
    singles[torch.arange(6), torch.randperm(n, generator=g)[:6]] = True
    masks = singles | (torch.rand(6, n, generator=g) < 0.3)
    for kwargs in ({}, {"batch_size": 4}):
        assert torch.allclose(cs.run_removals(masks, **kwargs), cw.run_removals(masks, **kwargs),
                              atol=1e-5)  # fmt: skip
    want_logits, want_states = cw.record_removals(singles, batch_size=3)
    got_logits, got_states = cs.record_removals(singles, batch_size=3)
    assert torch.allclose(got_logits, want_logits, atol=1e-5)
    bases = torch.arange(6)
    want = cw.run_removals(masks, bases=bases, states=want_states)
    got = cs.run_removals(masks, bases=bases, states=got_states)
    assert torch.allclose(got, want, atol=1e-5)
    assert (want - cw.clean_logits).abs().max() > 1e-3


def test_without_accelerate_a_device_map_names_the_install(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "accelerate" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(UsageError, match="pip install accelerate"):
        load_model(tmp_path, device_map="auto")


def test_disk_without_a_folder_and_bad_maps_are_usage_errors(tmp_path):
    adapter = tiny_model("gpt2")
    save_model(adapter, tmp_path / "m")
    with pytest.raises(UsageError, match="--offload-folder"):
        load_model(tmp_path / "m", device_map=disk_map(adapter))
    with pytest.raises(UsageError, match="preset"):
        load_model(tmp_path / "m", device_map="everywhere")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_model(tmp_path / "m", device_map="{transformer.h.0: cpu}")
    # a map that leaves modules out (here a misspelt block) is refused before any weight loads
    # (transformers would load the model whole on one device without a word)
    partial = {("transformer.h.l" if k == "transformer.h.1" else k): "cpu"
               for k in disk_map(adapter)}  # fmt: skip
    with pytest.raises(UsageError, match=r"no device for \d+ parameters .*transformer\.h\.1"):
        load_model(tmp_path / "m", device_map=partial)
    # every module named, or a parent of it, or the root: accepted
    whole = load_model(tmp_path / "m", device_map={"": "cpu"})
    tokens = adapter.to_tokens("w1 w2 w3")
    with torch.no_grad():
        assert torch.allclose(whole(tokens), adapter(tokens), atol=1e-6)


def test_the_api_loads_with_a_device_map_and_attributes_the_same_graph(loaded, tmp_path):
    import cltrace

    plain, _, tc = loaded
    save_model(plain, tmp_path / "model")
    spread = cltrace.load_model(tmp_path / "model", device_map=disk_map(plain),
                                offload_folder=tmp_path / "off")  # fmt: skip
    assert next(iter(spread.norm_modules(DISK_BLOCKS[0]).values())).weight.device.type == "meta"
    want = cltrace.attribute(plain, tc, PAIR.clean)
    got = cltrace.attribute(spread, tc, PAIR.clean)
    assert torch.allclose(got.graph.adjacency.float(), want.graph.adjacency.float(), atol=1e-5)
    assert got.replacement_score == pytest.approx(want.replacement_score, abs=1e-5)
    assert got.completeness_score == pytest.approx(want.completeness_score, abs=1e-5)
