"""A synthetic catalog, interaction log and impression log with a known ground truth.

Why it exists: the offline demo, the tests and the off-policy A/B code need data whose structure is
known. Real logs never tell you the users' true tastes or the logging policy's probabilities; here
both are recorded, so an estimator can be checked against the value it should find.

What is in it
-------------
* **Items** belong to one of ten categories (sci-fi books, cookbooks, running gear, jazz albums,
  travel guides, kids' toys, gardening, personal finance, video games, crime fiction), each with six
  finer *topics*. Titles and descriptions are composed from per-category and per-topic vocabularies
  (adjectives, nouns, makers, topic hooks, templates), so text similarity follows category and topic
  and a text encoder has something real to learn. Some items form a *series* (``..., Book 2``).
  Roughly 30% of items are created during the simulated period, the rest before it.
  Popularity is Zipf-distributed over a random rank within each category.
* **Users** have two latent taste anchors, each a Dirichlet mixture over categories times a
  Dirichlet mixture over the topics of each category. A user's taste at time ``t`` is
  ``(1 - lam) * P0 + lam * P1`` with ``lam = drift_u * progress_u(t)`` growing linearly from 0 at the
  user's first interaction to ``drift_u`` at the last: tastes DRIFT.
* **Interactions** come in sessions. A session starts with a topic drawn from the current taste;
  later steps stay on the previous topic, jump to the next volume of the series just seen, or draw
  a fresh topic. Items are drawn by popularity within the topic among items that already exist;
  a user rarely sees the same item twice. Each user has at least 3 interactions, with a long-tailed
  (log-normal) count. ``event`` is ``"view"`` (``weight`` 1.0) or ``"purchase"`` (``weight`` 3.0);
  purchases are likelier for items the user truly likes.
* **Impressions** are logged by a known stochastic policy (see "Logging policy and propensity").

Ground truth (``GroundTruth``, returned by :func:`generate_with_truth`)
----------------------------------------------------------------------
``affinity(u, i, t) = log(n_topics * max(P_t(u)[topic(i)], 1e-4)) + quality(i)``

Click model (position-based): ``P(click | u, i, position k, t) = position_bias[k] *
sigmoid(affinity(u, i, t) + click_bias)``; see :meth:`GroundTruth.click_probability`.

Logging policy and propensity
-----------------------------
The logging policy scores every item that exists at request time with a *noisy* estimate of the
user's taste, ``s(u, i, t) = log(n_topics * max(P_t(u)[topic(i)], 1e-4)) + noise[u, topic(i)] +
logged_quality(i)``, and fills the slate by Plackett-Luce sampling without replacement from
``softmax(s / temperature)`` over those items. Positions are 0-based.

The recorded ``propensity`` of the item at position ``k`` is its **Plackett-Luce conditional
probability**: the softmax probability of that item among the available items not already placed at
positions ``0..k-1`` of the same request. Two consequences that make IPS exact (unbiased):

* at position 0 it is the marginal probability of a single-slot request, so
  ``mean(clicked * pi_e(item | u, t) / propensity)`` over position-0 rows is an unbiased estimate of a
  single-slot target policy ``pi_e``'s click rate in the top slot (``position_bias[0]`` applies);
* at position ``k``, the product of ``pi_e(a_j | earlier) / propensity_j`` over ``j = 0..k`` is an
  unbiased weight for the clicks at position ``k`` of any target policy that also fills slates
  sequentially (the click at ``k`` depends only on the item at ``k``, by the click model).

:meth:`GroundTruth.logging_probability` recomputes the single-slot probabilities, and
:meth:`GroundTruth.click_probability` (or ``click_probability_matrix`` over a candidate list, with
``available`` and ``logging_probability_matrix``) gives the true value of any target policy, e.g.
``(pi_e * truth.click_probability_matrix(users, ts, item_ids)).sum(axis=1).mean()``.
Temperatures below ~0.1 are valid but slower (slates need many rejection rounds).

Layout
------
``vocabulary`` (the word lists and templates), ``config`` (``SyntheticConfig``, sizes, ids and
times), ``truth`` (``GroundTruth``), ``catalog`` (items and their text), ``sessions`` (users and
interactions), ``impressions`` (the logged slates) and ``generator`` (``generate``,
``generate_with_truth``). The names below are the public ones.

Scale
-----
Everything is vectorised numpy plus polars string concatenation (no per-row Python), and every
random stream is seeded, so the same seed gives identical frames. 10M interactions (500k users,
250k items, 5M impressions) take about 50 s and 2.6 GB peak RSS on two shared cores (see
``benchmarks/bench_synthetic.py``).
"""

from recsys.data.synthetic.config import DAY, SyntheticConfig
from recsys.data.synthetic.generator import generate, generate_with_truth
from recsys.data.synthetic.truth import TASTE_FLOOR, GroundTruth
from recsys.data.synthetic.vocabulary import CATEGORIES, N_TOPICS, TEXT_TEMPLATE, TOPICS_PER_CATEGORY, Category, Topic

__all__ = [
    "CATEGORIES",
    "DAY",
    "N_TOPICS",
    "TASTE_FLOOR",
    "TEXT_TEMPLATE",
    "TOPICS_PER_CATEGORY",
    "Category",
    "GroundTruth",
    "SyntheticConfig",
    "Topic",
    "generate",
    "generate_with_truth",
]
