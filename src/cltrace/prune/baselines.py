"""Baselines beyond FAP (docs/METHODS.md §4) register themselves here.

Each method lives in its own module; this file is the one list of what the registry gains.
Activation magnitude and random selection sit beside FAP in :mod:`cltrace.prune.methods`.
``learned_mask`` is registered for runs that name it; no default method list contains it, so
it changes no other method's results.
"""

from cltrace.prune.acdc import acdc_select
from cltrace.prune.factp import factp_select
from cltrace.prune.graph_influence import graph_influence_scores
from cltrace.prune.learned import learned_select
from cltrace.prune.methods import Method, register, score_method
from cltrace.prune.relp import relp_scores

score_method("relp", "CLT-RelP", lambda ctx: ctx.pool(relp_scores(ctx.comps)))
register(Method("factp", "FActP", factp_select))
register(Method("acdc", "ACDC-style greedy", acdc_select))
score_method("graph_influence", "Attribution-graph influence", graph_influence_scores)
register(Method("learned_mask", "Learned mask (hard-concrete)", learned_select))
