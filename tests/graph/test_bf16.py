"""bfloat16 on CPU: the model and CLT in bf16 give a graph whose edges still add up to its
targets (within bf16 rounding) and whose scores stay close to float32's."""

import torch

import cltrace

PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_bf16_graph_adds_up_and_matches_float32():
    graphs = {}
    for dtype in ("float32", "bf16"):
        model = cltrace.load_model(dtype=dtype)
        tc = cltrace.load_transcoder(model=model)
        assert tc.W_enc[0].dtype == model.dtype
        graphs[dtype] = cltrace.attribute(model, tc, PROMPT)
    assert graphs["bf16"].graph.adjacency.dtype == torch.float32  # rows are reduced in float32
    for name, g in graphs.items():
        G = g.graph
        total = G.adjacency.double().sum(1) + G.bias_values.double()
        error = (total - G.target_values.double()).abs().max() / G.target_values.abs().max()
        assert error < (1e-5 if name == "float32" else 5e-3), (name, float(error))
    full, half = graphs["float32"], graphs["bf16"]
    assert abs(full.replacement_score - half.replacement_score) < 0.02
    assert abs(full.completeness_score - half.completeness_score) < 0.02
    # the same behaviour is explained: most active features agree
    assert abs(full.graph.n_active_features - half.graph.n_active_features) < 0.05 * (
        full.graph.n_active_features
    )
