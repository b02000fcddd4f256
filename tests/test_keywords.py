"""Keyword stage (MFPO sec. 3.1): each step against hand-computed numbers, then end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mfpo.config import UnknownOptionError
from mfpo.keywords import (
    KeywordConfig,
    RankingDidNotConverge,
    extract_keywords,
    get_embedder,
    rank_candidates,
    select_candidates,
    select_top_k,
    weighted_pagerank,
)
from mfpo.keywords.candidates import Candidate, is_negated, pos_tag, tokenize
from mfpo.keywords.graph import (
    build_graph,
    combined_weight,
    contextual_adjustment,
    cosine_matrix,
    edge_weights,
    positional_decay,
    positional_influence,
    semantic_similarity,
    topics,
)
from mfpo.keywords.objectness import KINDS, WEIGHTS_FILE, fit_softmax, kind_probabilities, noun_kinds, refit, softmax
from mfpo.keywords.rank import iterations_needed, pagerank, transition_matrix
from mfpo.regions.matching import match_by_embedding, match_keyword

# --- candidates ---------------------------------------------------------------------------


def test_tokenize_and_tags_work_offline():
    tokens = tokenize("A man isn't wearing a t-shirt; two dogs’ bowls.")
    assert tokens == ["A", "man", "is", "n't", "wearing", "a", "t-shirt", ";", "two", "dogs", "'", "bowls", "."]
    tags = pos_tag(["A", "stop", "sign", "next", "to", "a", "parked", "car"])
    assert tags[1] == "NN" and tags[2] == "NN" and tags[6] == "JJ" and tags[7] == "NN"


def test_candidates_are_noun_phrases_with_positions_and_negations_dropped():
    text = "A red cup sits left of two blue balls. The red cups are on a wooden table. There are no people."
    cands = select_candidates(text)
    assert [c.lemma for c in cands] == ["red cup", "blue ball", "wooden table"]
    red = cands[0]
    assert red.text == "red cup" and red.head == "cup"
    tokens = tokenize(text)
    assert [tokens[p] for p in red.positions] == ["red", "red"] and red.first_position == 1
    assert is_negated(tokenize("there are no visible people"), 4)
    assert not is_negated(tokenize("a man not wearing a hat"), 5)


def test_long_noun_runs_keep_the_head_and_nearest_modifiers():
    [cand] = select_candidates("a large old wooden dining table")
    assert cand.lemma == "wooden dining table"
    assert [c.lemma for c in select_candidates("a cup", KeywordConfig(min_phrase_words=2))] == []


def test_non_visual_nouns_are_not_candidates():
    cands = select_candidates("The image shows a cozy atmosphere with a cat in the background.")
    assert [c.lemma for c in cands] == ["cat"]


# --- graph: each term of the edge weight ------------------------------------------------


def test_positional_influence_by_hand():
    theta = positional_influence([[0, 4], [2], [7]], phi=1.0)
    # theta_01 = 1/(1+2) + 1/(1+2); theta_02 = 1/8 + 1/4; theta_12 = 1/6
    assert theta[0, 1] == pytest.approx(2 / 3) and theta[1, 0] == pytest.approx(2 / 3)
    assert theta[0, 2] == pytest.approx(1 / 8 + 1 / 4)
    assert theta[1, 2] == pytest.approx(1 / 6)
    assert np.all(np.diag(theta) == 0)
    # phi = 2: 1 / (1 + 2^2)
    assert positional_influence([[0], [2]], phi=2.0)[0, 1] == pytest.approx(1 / 5)
    with pytest.raises(ValueError):
        positional_influence([[0], []], 1.0)


def test_semantic_similarity_and_cosine_by_hand():
    s = cosine_matrix(np.array([[3.0, 4.0], [4.0, 3.0], [-1.0, 0.0], [0.0, 0.0]]))
    assert s[0, 1] == pytest.approx(24 / 25) and s[0, 2] == pytest.approx(-3 / 5)
    assert s[3, 0] == 0.0
    sigma = semantic_similarity(s, gamma=0.5)
    assert sigma[0, 1] == pytest.approx(0.48) and sigma[0, 2] == 0.0 and sigma[0, 0] == 0.0


def test_topics_cluster_by_average_linkage_and_same_head():
    sim = np.array([[1.0, 0.9, 0.1, 0.2], [0.9, 1.0, 0.3, 0.1], [0.1, 0.3, 1.0, 0.0], [0.2, 0.1, 0.0, 1.0]])
    assert topics(["cup", "mug", "dog", "cat"], sim, 0.7).tolist() == [0, 0, 1, 2]
    # same head noun counts as similarity 1: {0, 3} joins; then {0, 3} vs 1 averages (0.9 + 0.1) / 2 < 0.7
    assert topics(["cup", "mug", "dog", "cup"], sim, 0.7).tolist() == [0, 1, 2, 0]
    # average linkage: {0,1} vs 2 has mean (0.1 + 0.3) / 2 = 0.2 < 0.25, so 2 stays alone
    assert topics(["a", "b", "c", "d"], sim, 0.25).tolist() == [0, 0, 1, 2]


def test_full_graph_on_three_candidates_by_hand():
    # A at token 0, B at 2, C at 6 of a 10-token answer; v(A) = v(C) (one topic), v(B) orthogonal.
    cands = [Candidate("a", "a", "a", (0,)), Candidate("b", "b", "b", (2,)), Candidate("c", "c", "c", (6,))]
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    config = KeywordConfig(phi=1.0, gamma=0.5, rho=1.1, decay_lambda=1.0, topic_threshold=0.7, normalize_positions=True)
    omega, topic_of = build_graph(cands, vectors, n_tokens=10, config=config)
    assert topic_of.tolist() == [0, 1, 0]
    # mu: AB = theta 1/3 + sigma 0; BC = 1/5 + 0; AC = 0 (same topic).
    # tau: A leads topic {A, C}: tau_AB = 1/3 + 1.1 * mu_CB = 1/3 + 1.1/5; other rows = mu.
    # kappa_i = exp(-l_i / 10): A 1, B exp(-0.2), C exp(-0.6).
    expected = np.array(
        [
            [0.0, 1 / 3 + 1.1 / 5, 0.0],
            [math.exp(-0.2) / 3, 0.0, math.exp(-0.2) / 5],
            [0.0, math.exp(-0.6) / 5, 0.0],
        ]
    )
    np.testing.assert_allclose(omega, expected, rtol=1e-12)


def test_graph_steps_compose_as_the_paper_writes():
    theta = np.array([[0, 1.0, 2.0], [1.0, 0, 3.0], [2.0, 3.0, 0]])
    sigma = np.full((3, 3), 0.5)
    topic_of = np.array([0, 1, 1])
    mu = combined_weight(theta, sigma, topic_of)
    assert mu.tolist() == [[0.0, 1.5, 2.5], [1.5, 0.0, 0.0], [2.5, 0.0, 0.0]]
    tau = contextual_adjustment(mu, topic_of, first_positions=[5, 1, 3], rho=2.0)
    # topic {1, 2}: leader 1 (position 1) gets rho * mu[2] added: tau_10 = 1.5 + 2 * 2.5
    assert tau[1, 0] == pytest.approx(6.5) and tau[2, 0] == pytest.approx(2.5) and tau[0, 1] == 1.5
    kappa = positional_decay([5, 1, 3], n_tokens=10, decay_lambda=2.0, normalize=False)
    # relative to the earliest candidate (position 1): exp(-2 * (5 - 1)), exp(-2 * 0)
    assert kappa[0, 2] == pytest.approx(math.exp(-8)) and kappa[1, 0] == pytest.approx(1.0)
    omega = edge_weights(tau, kappa)
    assert omega[1, 0] == pytest.approx(6.5) and omega[1, 1] == 0.0


# --- ranking -------------------------------------------------------------------------------


def test_transition_normalizes_by_the_senders_out_weight():
    # omega[i, j]: what k_i receives from k_j. Sender j's out-weight is column j's sum.
    omega = np.array([[0.0, 2.0, 1.0], [2.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    p = transition_matrix(omega)
    # P_ij = omega_ij / sum_m omega_mj: P_01 = 2 / 2, P_02 = 1 / 1, P_10 = 2 / 6, P_20 = 4 / 6
    assert p[0, 1] == 1.0 and p[0, 2] == 1.0 and p[1, 0] == pytest.approx(1 / 3) and p[2, 0] == pytest.approx(2 / 3)
    np.testing.assert_allclose(p.sum(axis=0), 1.0)  # column-stochastic
    assert transition_matrix(np.zeros((2, 2))).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError):
        transition_matrix(-omega)


def test_pagerank_star_graph_by_hand():
    # r0 = .15 + .85 (r1 + r2), r1 = r2 = .15 + .85 r0 / 2  =>  r0 = .405 / .2775
    omega = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    r = weighted_pagerank(omega, alpha_page=0.85, tol=1e-12, max_iter=1000)
    r0 = 0.405 / 0.2775
    np.testing.assert_allclose(r, [r0, 0.15 + 0.425 * r0, 0.15 + 0.425 * r0], rtol=1e-9)
    assert r.sum() == pytest.approx(3.0)
    # an isolated node keeps r_0 = 1 - alpha_page
    assert weighted_pagerank(np.zeros((1, 1)), 0.85).tolist() == [pytest.approx(0.15)]
    with pytest.raises(RankingDidNotConverge, match="max_iter=1"):
        weighted_pagerank(omega, 0.85, tol=1e-12, max_iter=1, strict=True)
    # not strict: max_iter=1 is raised to the proven bound, so it converges anyway
    result = pagerank(omega, 0.85, tol=1e-12, max_iter=1)
    assert result.converged and result.iterations <= iterations_needed(3, 0.85, 1e-12)
    np.testing.assert_allclose(result.scores, r, rtol=1e-9)


def test_pagerank_on_an_asymmetric_graph_by_hand():
    # 0 -> 1 weight 3, 0 -> 2 weight 1 (omega[1, 0] = 3, omega[2, 0] = 1); 1 -> 0 and 2 -> 0 weight 1.
    # P = [[0, 1, 1], [3/4, 0, 0], [1/4, 0, 0]]; solve r = .15 + .85 P r by hand:
    # r1 = .15 + .6375 r0, r2 = .15 + .2125 r0, r0 = .15 + .85 (r1 + r2) = .405 + .7225 r0.
    omega = np.array([[0.0, 1.0, 1.0], [3.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    r0 = 0.405 / 0.2775
    np.testing.assert_allclose(weighted_pagerank(omega, 0.85, 1e-13), [r0, 0.15 + 0.6375 * r0, 0.15 + 0.2125 * r0])


def test_pagerank_prior_scales_the_restart():
    # an isolated node with prior q keeps (1 - alpha) q; q = 1 is the paper's update
    r = weighted_pagerank(np.zeros((2, 2)), 0.85, prior=[1.0, 0.2])
    np.testing.assert_allclose(r, [0.15, 0.03])
    with pytest.raises(ValueError, match="prior"):
        weighted_pagerank(np.zeros((2, 2)), 0.85, prior=[1.5, 0.0])


@pytest.mark.parametrize("seed", range(5))
def test_pagerank_orders_like_networkx_on_symmetric_graphs(seed):
    import networkx as nx
    rng = np.random.default_rng(seed)
    n = 12
    upper = np.triu(rng.random((n, n)) * (rng.random((n, n)) < 0.5), 1)
    omega = upper + upper.T
    omega[0, 1] = omega[1, 0] = 0.5  # keep every node connected to something
    omega[np.arange(2, n), 0] = omega[0, np.arange(2, n)] = np.maximum(omega[0, 2:], 0.05)
    graph = nx.from_numpy_array(omega)
    expected = nx.pagerank(graph, alpha=0.85, weight="weight", tol=1e-14, max_iter=10_000)
    ours = weighted_pagerank(omega, 0.85, tol=1e-13)
    theirs = np.array([expected[i] for i in range(n)])
    # networkx's r sums to 1 with restart (1 - alpha) / n; ours restarts with 1 - alpha: r = n * r_nx
    np.testing.assert_allclose(ours / n, theirs, rtol=1e-7)
    assert np.argsort(-ours, kind="stable").tolist() == np.argsort(-theirs, kind="stable").tolist()


def test_ranking_converges_on_long_answers_with_the_papers_raw_positions():
    sentence = (
        "A man in a red jacket rides a horse past a wooden fence near a barn, while a dog chases a ball "
        "across the grass and two children watch from a bench under a large oak tree. "
    )
    text = sentence * 12  # ~480 tokens, candidates spread to the end
    for config in (
        KeywordConfig(normalize_positions=False, decay_lambda=1.0),  # the paper's literal exp(-lambda l_i)
        KeywordConfig(normalize_positions=False, decay_lambda=50.0),
        KeywordConfig(),
    ):
        cands, scores, _ = rank_candidates(text, config)
        assert len(cands) >= 8 and np.isfinite(scores).all() and max(scores) < 1e3
        assert extract_keywords(text, config)  # never raises


def test_select_top_k_one_per_topic():
    scores = [0.9, 0.8, 0.7, 0.7, 0.1]
    assert select_top_k(scores, 3) == [0, 1, 2]
    assert select_top_k(scores, 3, topic_of=[0, 0, 1, 2, 3]) == [0, 2, 3]
    assert select_top_k(scores, 10, topic_of=[0, 0, 0, 0, 0]) == [0]


# --- end to end with the shipped MiniLM --------------------------------------------------


def test_embedder_is_offline_normalized_and_batch_independent():
    embedder = get_embedder()
    a = embedder.embed(["red cup", "a large wooden table", "dog"])
    assert a.shape == (3, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    alone = embedder.embed(["a large wooden table"])[0]
    np.testing.assert_allclose(alone, a[1], atol=1e-6)
    cos = a @ a.T
    assert cos[0, 1] < 0.6
    assert float(embedder.embed(["sofa"])[0] @ embedder.embed(["couch"])[0]) > 0.7


def test_extract_keywords_ranks_the_objects():
    text = (
        "The image shows a man riding a brown horse along the beach. A small dog runs beside the horse, "
        "and there are no other people around."
    )
    kws = extract_keywords(text, KeywordConfig(top_k=4))
    assert {k.text for k in kws} == {"man", "brown horse", "beach", "small dog"}
    assert [k.score for k in kws] == sorted((k.score for k in kws), reverse=True)
    # things before stuff (objectness prior), the subject first; the beach (stuff) is last
    assert [k.text for k in kws] == ["man", "brown horse", "small dog", "beach"]
    cands, scores, topic_of = rank_candidates(text)
    assert len(cands) == len(scores) == len(topic_of) >= 4
    assert extract_keywords("It is sunny.") == []


def test_keyword_config_is_strict():
    with pytest.raises(UnknownOptionError, match=r"valid options: .*alpha_page"):
        KeywordConfig(alpha=0.5)
    with pytest.raises(ValueError):
        KeywordConfig(alpha_page=1.0)
    with pytest.raises(ValueError, match="min_phrase_words"):
        KeywordConfig(min_phrase_words=4, max_phrase_words=2)
    assert "damping" in KeywordConfig.help()["alpha_page"]


# --- keyword -> annotation label ---------------------------------------------------------


def test_match_keyword_lemma_synonym_embedding():
    labels = ["red cup", "blue cup", "automobile", "woman", "computer"]
    embedder = get_embedder()
    assert match_keyword("red cups", labels, embedder=embedder, threshold=0.6) == [0]
    assert match_keyword("cups", labels, embedder=embedder, threshold=0.6) == [0, 1]
    assert match_keyword("car", labels, embedder=embedder, threshold=0.6) == [2]  # synonym table
    assert match_keyword("person", labels, embedder=embedder, threshold=0.6) == [3]  # hypernym
    assert match_keyword("laptop", labels, embedder=embedder, threshold=0.6) == [4]  # MiniLM cosine 0.71
    assert match_keyword("giraffe", labels, embedder=embedder, threshold=0.6) == []
    assert match_keyword("laptop", labels, embedder=None, threshold=0.6) == []
    assert match_by_embedding("laptop", labels, embedder, threshold=0.8) == []


# --- objectness (ours: the candidate filter and the ranking prior) ------------------------


def test_softmax_by_hand():
    p = softmax(np.array([[0.0, math.log(3.0)], [5.0, 5.0]]))
    np.testing.assert_allclose(p, [[0.25, 0.75], [0.5, 0.5]])


def test_fit_softmax_separates_a_toy_problem():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, -1.0], [-0.9, -1.1]])
    y = np.array([0, 0, 1, 1, 2, 2])
    w, b = fit_softmax(x, y, l2=1e-4, iters=2000, lr=1.0)
    assert (softmax(x @ w.T + b).argmax(axis=1) == y).all()


def test_noun_categories_are_consistent_and_cover_the_kinds():
    kinds = noun_kinds()
    assert kinds["dog"] == "thing" and kinds["grass"] == "stuff" and kinds["room"] == "none"
    assert kinds["leather"] == "none" and kinds["game"] == "none" and kinds["skiing"] == "none"
    assert set(kinds.values()) == set(KINDS) and len(kinds) > 1000


def test_kind_probabilities_lexicon_then_classifier():
    probs = kind_probabilities(["dog", "sky", "bedroom", "wheelbarrow", "saxophone", "loneliness", "negotiation"],
                               get_embedder())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[0].tolist() == [1.0, 0.0, 0.0] and probs[1].tolist() == [0.0, 1.0, 0.0]
    assert probs[2].tolist() == [0.0, 0.0, 1.0]
    # not listed: classified from MiniLM vectors
    assert probs[3, 0] + probs[3, 1] > 0.5 and probs[4, 0] > 0.5
    assert probs[5, 2] > 0.5 and probs[6, 2] > 0.5


def test_shipped_classifier_is_the_fit_of_the_shipped_categories():
    fitted = refit(get_embedder())
    shipped = json.loads(WEIGHTS_FILE.read_text())
    np.testing.assert_allclose(np.array(fitted["W"]), np.array(shipped["W"]), atol=1e-5)
    assert fitted["training_accuracy"] == shipped["training_accuracy"] > 0.8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The photo shows a skate park where a person skiing passes a man.", ["person", "man"]),
        ("A baseball game in a large room, with a leather bag on the floor.", ["leather bag", "floor"]),
        ("A herd of zebras grazes by a slice of pizza and rolls of toilet paper.", ["zebras", "pizza", "toilet paper"]),
    ],
)
def test_candidates_that_name_no_region_are_dropped(text, expected):
    cands, _, _ = rank_candidates(text)
    assert [c.text for c in cands] == expected


def test_objectness_filter_and_prior_can_be_switched_off():
    text = "A baseball game in a large room."
    unfiltered = rank_candidates(text, KeywordConfig(min_objectness=0.0))[0]
    assert [c.text for c in unfiltered] == ["baseball game", "large room"]
    assert rank_candidates(text)[0] == []
    plain = KeywordConfig(objectness_prior=False, min_objectness=0.0)
    cands, scores, _ = rank_candidates("Grass under a dog.", plain)
    assert [c.text for c in cands] == ["grass", "dog"] and select_top_k(scores, 1) == [0]  # position decides
    cands, scores, _ = rank_candidates("Grass under a dog.")
    assert scores[1] > scores[0]  # the thing outranks the stuff
