import cltrace

model = cltrace.load_model()  # the bundled model; an HF id or a directory otherwise
tc = cltrace.load_transcoder()  # the bundled CLT; a directory or hub id otherwise
g = cltrace.attribute(model, tc, "When Mary and John went to the store, John gave a drink to")
print(g.replacement_score, g.completeness_score, g.n_nodes)
small = g.prune(node_threshold=0.8, edge_threshold=0.98)
small.save("graph.json")  # the graph JSON that viewers read
pairs = cltrace.make_pairs("ioi", n=10, seed=0, model=model)
res = cltrace.prune(model, tc, pairs, methods=["fap", "fap_synergy", "random"], budgets=[50, 100])
print(res.table())  # KL per method and budget, with CIs
kept = res.kept("fap_synergy", 100)  # (layer, feature) ids
notes = cltrace.explain(model, tc, kept[:5])  # WeightLens, offline
print(notes[0])
