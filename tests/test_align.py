"""Token alignment and parameter parsing: pure functions over the real CLIP tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import CLIPTokenizer

from clp2p.attention.plan import cross_alpha
from clp2p.errors import Clp2pError
from clp2p.model.align import align_tokens, refine_mapper, swap_mapper, tokenize
from clp2p.model.edits import resolve_edit
from clp2p.model.params import CrossWindow, EditParams, StepWindow
from clp2p.resources import resources_dir

T = 77


@pytest.fixture(scope="module")
def tok():
    return CLIPTokenizer.from_pretrained(str(resources_dir() / "tokenizers" / "clip"))


def test_word_spans_follow_multi_token_words(tok):
    p = tokenize("a hippopotamus on a mat", tok)
    assert p.spans == ((1,), (2, 3, 4), (5,), (6,), (7,))
    assert p.length == 9 and p.find("hippopotamus") == [2, 3, 4]
    assert p.find("Mat") == [7]  # case and punctuation do not matter
    assert p.find("on a") == [5, 6]


def test_swap_mapper_spreads_a_word_over_more_tokens(tok):
    src = tokenize("a cat on a mat", tok)
    tgt = tokenize("a hippopotamus on a mat", tok)
    m = swap_mapper(src, tgt, T)
    assert m[0, 0] == 1 and m[1, 1] == 1
    np.testing.assert_allclose(m[2, 2:5], [1 / 3] * 3)
    assert m[3, 5] == 1 and m[5, 7] == 1  # words after the swap shift by two tokens
    assert m[6, 8] == 1  # end token
    assert m[:, 8:].sum(axis=0).tolist() == [1.0] * (T - 8)  # padding keeps one source each
    # every source mass is kept: each source token's row sums to 1 over the prompt tokens
    np.testing.assert_allclose(m[:6, :].sum(axis=1), 1.0, atol=1e-6)


def test_swap_mapper_fewer_tokens(tok):
    src = tokenize("a photorealistic cat", tok)
    tgt = tokenize("a watercolor cat", tok)
    m = swap_mapper(src, tgt, T)
    assert m[2, 2] == 1 and m[3, 2] == 1  # both source tokens feed the one target token
    assert m[4, 3] == 1  # "cat"


def test_swap_with_different_word_counts_names_the_words(tok):
    with pytest.raises(Clp2pError) as err:
        swap_mapper(tokenize("a cat on a mat", tok), tokenize("a big cat on a red mat", tok), T)
    msg = str(err.value)
    assert "source has 5, target 7" in msg and "big" in msg and "red" in msg and "refine" in msg


def test_alignment_insertions_and_deletions():
    assert align_tokens([0, 5, 6, 9], [0, 5, 7, 6, 9]) == [0, 1, -1, 2, 3]  # insertion
    assert align_tokens([0, 5, 7, 6, 9], [0, 5, 6, 9]) == [0, 1, 3, 4]  # deletion
    assert align_tokens([0, 5, 6, 9], [0, 8, 6, 9]) == [0, -1, 2, 3]  # replacement


def test_refine_mapper_new_words_keep_their_own_maps(tok):
    src = tokenize("a cat on a mat", tok)
    tgt = tokenize("a fluffy cat on a mat", tok)
    m, take = refine_mapper(src, tgt, T)
    assert take[:8].tolist() == [1, 1, 0, 1, 1, 1, 1, 1]
    assert m[2, 3] == 1 and m[1, 1] == 1 and m[6, 7] == 1
    assert m[:, 2].sum() == 0
    m2, take2 = refine_mapper(tgt, src, T)  # deletion: every target token has a source
    assert take2[:7].tolist() == [1] * 7 and m2[3, 2] == 1


@pytest.mark.parametrize("grow", [True, False])
def test_refine_padding_follows_the_reference_or_shifts(tok, grow):
    short, long = tokenize("a cat on a mat", tok), tokenize("a fluffy grey cat on a mat", tok)
    src, tgt = (short, long) if grow else (long, short)
    ref, _ = refine_mapper(src, tgt, T)  # the default: as prompt-to-prompt's reference
    shifted, _ = refine_mapper(src, tgt, T, "shifted")
    end_s, end_t = src.length - 1, tgt.length - 1
    assert ref[end_s, end_t] == shifted[end_s, end_t] == 1  # the end tokens pair up
    for p in range(tgt.length, T):
        assert ref[p, p] == 1 and ref[:, p].sum() == 1  # padding position p takes p
        q = min(end_s + p - end_t, T - 1)
        assert shifted[q, p] == 1 and shifted[:, p].sum() == 1
    assert np.array_equal(ref[:, : tgt.length], shifted[:, : tgt.length])  # words: the same
    assert not np.array_equal(ref, shifted)


def test_v3_sessions_keep_their_refinements_shifted(tmp_path):
    import json

    from clp2p.model.params import EditParams
    from clp2p.model.session import Session
    from clp2p.model.settings import RenderSettings
    from clp2p.workflows import session_io

    session = Session.new("a cat", RenderSettings(steps=3), "shapes")
    session, node = session.add_edit("n1", "a grey cat", EditParams(kind="refine"))
    assert session.node(node).params.refine_pad == "reference"  # new edits: the reference
    path = tmp_path / "s.json"
    session_io.save(session, path)
    assert "refine_pad" not in json.loads(path.read_text())["nodes"][1]["params"]
    data = json.loads(path.read_text())
    data["schema_version"] = 3  # as clp2p wrote it before: rendered with the shift
    path.write_text(json.dumps(data))
    assert session_io.load(path)[0].node(node).params.refine_pad == "shifted"
    session_io.save(session_io.load(path)[0], path)
    assert json.loads(path.read_text())["nodes"][1]["params"]["refine_pad"] == "shifted"


def test_step_window_specs():
    assert StepWindow.parse("0.8") == StepWindow(0, 0.8)
    assert StepWindow.parse("0.1:0.6") == StepWindow(0.1, 0.6)
    assert StepWindow(0, 0.3).contains(2, 10) and not StepWindow(0, 0.3).contains(3, 10)
    for bad in ("1.2", "0.5:0.2", "abc", "-0.1"):
        with pytest.raises(Clp2pError):
            StepWindow.parse(bad)
    cw = CrossWindow.parse("0.8,lion=0.4,cat=0.2:0.6")
    assert cw.default == StepWindow(0, 0.8)
    assert cw.words == (("lion", StepWindow(0, 0.4)), ("cat", StepWindow(0.2, 0.6)))
    assert CrossWindow.parse(cw.spec()) == cw


def test_per_word_cross_windows(tok):
    tgt = tokenize("a lion on a mat", tok)
    params = EditParams(cross=CrossWindow(StepWindow(0, 1.0), (("lion", StepWindow(0, 0.5)),)))
    a = cross_alpha(params, tgt, 10, T)
    assert a[:, 2].tolist() == [1] * 5 + [0] * 5
    assert a[:, 1].tolist() == [1] * 10


def test_resolve_auto_kind_and_default_blend_words(tok):
    src = tokenize("a red circle on a white background", tok)
    swap = resolve_edit(
        src, tokenize("a blue circle on a white background", tok), EditParams(k=0.3)
    )
    assert swap.kind == "swap" and swap.blend_words == ("red", "blue")
    refine = resolve_edit(
        src, tokenize("a red big circle on a white background", tok), EditParams()
    )
    assert refine.kind == "refine" and refine.blend_words == ()
    rw = resolve_edit(src, src, EditParams(reweight=(("red", 2.0),), k=0.3))
    assert rw.kind == "reweight" and rw.blend_words == ("red",)
    with pytest.raises(Clp2pError, match="keeps the prompt"):
        resolve_edit(
            src,
            tokenize("a blue circle on a white background", tok),
            EditParams(kind="reweight", reweight=(("blue", 2.0),)),
        )


def test_params_json_round_trip():
    p = EditParams(
        kind="swap",
        cross=CrossWindow(StepWindow(0.1, 0.7), (("cat", StepWindow(0, 0.3)),)),
        self_res=None,
        v_window=StepWindow(0.2, 0.6),
        v_blend=0.4,
        v_layers="cross",
        k=0.3,
        blend_words=("cat",),
        reweight=(("cat", -1.0),),
        inject_uncond=True,
    )
    assert EditParams.from_json(p.to_json()) == p
