"""Baselines beyond FAP (docs/METHODS.md §4) register themselves here.

Each method lives in its own module; this file is the one list of what the registry gains.
Activation magnitude and random selection sit beside FAP in :mod:`cltrace.prune.methods`.
"""

from cltrace.prune.acdc import acdc_select
from cltrace.prune.factp import factp_select
from cltrace.prune.graph_influence import graph_influence_scores
from cltrace.prune.methods import Method, register, score_method
from cltrace.prune.relp import relp_scores

score_method("relp", "CLT-RelP", lambda ctx: ctx.pool(relp_scores(ctx.comps)))
register(Method("factp", "FActP", factp_select))
register(Method("acdc", "ACDC-style greedy", acdc_select))
score_method("graph_influence", "Attribution-graph influence", graph_influence_scores)
