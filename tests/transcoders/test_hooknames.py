import pytest

from cltrace.errors import CltraceError
from cltrace.transcoders import hook_site, site_name


@pytest.mark.parametrize(
    "name,kind",
    [
        ("ln2.hook_normalized", "mlp_in"),
        ("blocks.3.ln2.hook_normalized", "mlp_in"),
        ("mlp.hook_in", "mlp_in"),
        ("hook_resid_mid", "resid_mid"),
        ("blocks.4.hook_resid_mid", "resid_mid"),
        ("hook_mlp_out", "mlp_out"),
        ("blocks.11.mlp.hook_out", "mlp_out"),
    ],
)
def test_hook_table(name, kind):
    assert hook_site(name).kind == kind
    assert site_name(name, 2) == f"{kind}.2"


def test_unknown_hook():
    with pytest.raises(CltraceError, match="hook_attn_out"):
        hook_site("blocks.0.hook_attn_out")


def test_normalized_is_before_the_norm_weight_and_mlp_hook_out_before_a_post_norm():
    assert hook_site("blocks.2.ln2.hook_normalized").pre_affine
    assert not hook_site("mlp.hook_in").pre_affine
    assert hook_site("mlp.hook_out").before_post_norm
    assert not hook_site("hook_mlp_out").before_post_norm
