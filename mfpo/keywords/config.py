"""Settings of the keyword stage (MFPO section 3.1, "Keyword Selection").

The paper defers its hyperparameter values to a supplementary we do not have. The
defaults below follow the cited methods where they define a value (tolerance 1e-6 as in
networkx; topic boosting from Boudin 2018), are chosen so that each term of the edge
weight has a comparable scale on 1-4 sentence answers (phi, gamma), or were chosen on the
dev split of bench/data/keyword_dev.jsonl, real model-written descriptions, by
bench/keywords_eval.py (decay_lambda on raw positions, alpha_page, stuff_weight,
min_objectness); its held-out split was not used to choose anything.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from mfpo.config import ComponentConfig


class KeywordConfig(ComponentConfig):
    """Options of candidate selection, the multipartite graph and the weighted PageRank."""

    # -- candidates ---------------------------------------------------------------------
    min_phrase_words: int = Field(
        default=1, ge=1, description="Shortest noun phrase (in words) kept as a candidate."
    )
    max_phrase_words: int = Field(
        default=3,
        ge=1,
        description=(
            "Longest candidate noun phrase; longer adjective/noun runs keep their last words "
            "(head noun and nearest modifiers), e.g. 'large old wooden dining table' -> 'wooden dining table'."
        ),
    )
    min_word_chars: int = Field(
        default=2, ge=1, description="Words shorter than this break a noun phrase (tokenizer debris)."
    )
    extra_stopwords: tuple[str, ...] = Field(
        default=(),
        description=(
            "Additional words (surface or lemma, lowercase) that never belong to a keyword, on top of "
            "the shipped non-visual nouns and stop modifiers of mfpo.lexicon."
        ),
    )
    drop_negated: bool = Field(
        default=True,
        description=(
            "Drop candidates whose every occurrence follows a negation ('there are no people'): "
            "the image does not show them. Not in the paper; chosen answers often state absences."
        ),
    )
    min_objectness: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description=(
            "Drop candidates whose head noun names a physical region (thing or stuff, "
            "mfpo.keywords.objectness) with probability below this: places, events, activities, "
            "abstractions and materials ('room', 'baseball game', 'skiing', 'leather'). 0 keeps every "
            "candidate. Not in the paper, ours."
        ),
    )
    # -- graph (sec. 3.1 edge weights) ---------------------------------------------------
    topic_threshold: float = Field(
        default=0.7,
        ge=-1.0,
        le=1.0,
        description=(
            "Average-linkage cosine similarity at or above which candidates fall into the same topic "
            "(Boudin 2018 clusters candidates into topics; edges only join different topics). "
            "Candidates with the same head-noun lemma always share a topic. 0.7 joins cup/mug and "
            "sofa/couch but not dog/cat (MiniLM cosines 0.71, 0.86, 0.66)."
        ),
    )
    phi: float = Field(
        default=1.0,
        gt=0.0,
        description="phi of theta_ij = sum 1/(1+|l_i-l_j|^phi): how fast positional influence decays.",
    )
    gamma: float = Field(
        default=0.5,
        ge=0.0,
        description=(
            "gamma of sigma_ij = gamma * S(k_i, k_j): weight of semantic similarity against positional "
            "influence (neighbouring words have theta ~0.5, words 10 tokens apart ~0.09)."
        ),
    )
    rho: float = Field(
        default=1.1,
        ge=0.0,
        description=(
            "Strength of the contextual adjustment tau (Boudin 2018's topic boost, his alpha=1.1): the "
            "first-occurring candidate of each topic also receives the edges of its topic-mates."
        ),
    )
    decay_lambda: float = Field(
        default=0.3,
        ge=0.0,
        description=(
            "lambda of the positional decay kappa_ij = exp(-lambda * l_i), l_i the first token position of "
            "k_i (raw, as the paper writes it, unless normalize_positions). 0.3 on raw positions was best on "
            "the dev split (a word 10 tokens later receives exp(-3) ~ 5% of the weight)."
        ),
    )
    normalize_positions: bool = Field(
        default=False,
        description=(
            "Divide l_i by the answer's token count in kappa, so the decay does not depend on answer "
            "length (then lambda ~ 10-30 matches the default's effect on 1-4 sentence answers). Either way "
            "the ranking converges: it divides by the sender's out-weight, where a common factor cancels."
        ),
    )
    # -- ranking -------------------------------------------------------------------------
    objectness_prior: bool = Field(
        default=True,
        description=(
            "Restart each candidate's PageRank with (1 - alpha_page) * q_i, q_i = P(thing) + "
            "stuff_weight * P(stuff) of its head, instead of the paper's (1 - alpha_page): a candidate "
            "that surely names an object starts with more score. Ours, not the paper's."
        ),
    )
    stuff_weight: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description=(
            "Weight of P(stuff) in the prior q_i: regions without a countable shape (grass, sky, road) "
            "count this much of an object (a thing) counts."
        ),
    )
    alpha_page: float = Field(
        default=0.3,
        gt=0.0,
        lt=1.0,
        description=(
            "PageRank damping factor alpha_page (sec. 3.1): the share of a score that flows along edges. "
            "0.3 was best on the dev split (TextRank's 0.85 gives, on the held-out split, top-1 0.795 "
            "instead of 0.805 and 51.1% instead of 53.3% present objects in the top 3)."
        ),
    )
    tol: float = Field(
        default=1e-6, gt=0.0, description="Stop iterating when max_i |r_new(k_i) - r(k_i)| < tol."
    )
    max_iter: int = Field(
        default=200,
        ge=1,
        description=(
            "Iteration budget; the ranking runs at least as many iterations as its proven bound needs "
            "to reach tol (mfpo.keywords.rank.pagerank), so the result converges on every input."
        ),
    )
    top_k: int = Field(default=3, ge=1, description="Number of keywords K selected per answer.")
    one_per_topic: bool = Field(
        default=True,
        description=(
            "Select at most one candidate per topic ('red cup' and 'cup' name one object), so the K "
            "keywords point at K different regions. False gives plain top-K by score."
        ),
    )

    @field_validator("extra_stopwords")
    @classmethod
    def _normalize_stopwords(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Sorted and lowercase, so equal settings serialize (and hash into output keys) equally.
        return tuple(sorted({w.strip().lower() for w in v if w.strip()}))

    @model_validator(mode="after")
    def _check_lengths(self) -> KeywordConfig:
        if self.min_phrase_words > self.max_phrase_words:
            raise ValueError(
                f"min_phrase_words ({self.min_phrase_words}) > max_phrase_words ({self.max_phrase_words})"
            )
        return self
