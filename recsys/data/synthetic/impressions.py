"""The impression log: Plackett-Luce slates from the logging policy, their propensities and clicks."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.data.synthetic.config import DAY, SyntheticConfig, make_ids, utc_datetimes
from recsys.data.synthetic.sessions import inverse_cdf
from recsys.data.synthetic.truth import GroundTruth, sigmoid


def sample_impressions(
    rng: np.random.Generator,
    truth: GroundTruth,
    users: dict[str, np.ndarray],
    n_requests: int,
    cfg: SyntheticConfig,
    chunk: int = 50_000,
) -> pl.DataFrame:
    """Requests with Plackett-Luce slates from the logging policy, propensities and clicks."""
    uid = users["uid"][rng.integers(0, len(users["uid"]), n_requests)]  # request rate ∝ activity
    first, last = truth.first_s[uid], truth.last_s[uid]
    t_s = np.floor(first + rng.random(n_requests) * (last - first + DAY))
    order = np.lexsort((uid, t_s))
    uid, t_s = uid[order], t_s[order]

    k_slots = cfg.slate_size
    items = np.empty((n_requests, k_slots), dtype=np.int64)
    props = np.empty((n_requests, k_slots), dtype=np.float64)
    for s in range(0, n_requests, chunk):
        sl = slice(s, min(s + chunk, n_requests))
        items[sl], props[sl] = _slates(rng, truth, uid[sl], t_s[sl], k_slots)

    flat_u = np.repeat(uid, k_slots)
    flat_t = np.repeat(t_s, k_slots)
    flat_pos = np.tile(np.arange(k_slots, dtype=np.int64), n_requests)
    flat_item = items.ravel()
    affinity = truth._affinity_idx(flat_u, flat_item, flat_t)
    p_click = truth.position_bias[flat_pos] * sigmoid(affinity + truth.click_bias)
    clicked = rng.random(len(flat_item)) < p_click
    request_ids = make_ids("r", n_requests)
    return pl.DataFrame(
        {
            "request_id": request_ids.gather(np.repeat(np.arange(n_requests), k_slots)),
            "user_id": truth.user_ids.gather(flat_u),
            "ts": utc_datetimes(truth.start_us, flat_t.astype(np.int64)),
            "item_id": truth.item_ids.gather(flat_item),
            "position": pl.Series(flat_pos, dtype=pl.Int32),
            "clicked": clicked,
            "propensity": props.ravel(),
        }
    )


def _slates(
    rng: np.random.Generator, truth: GroundTruth, uidx: np.ndarray, t_s: np.ndarray, k_slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """Plackett-Luce slates without replacement, by rejection of repeats, with conditional propensities."""
    av = truth._availability
    parts = truth._logging_parts(uidx, t_s)
    factor, mass, z = parts["factor"], parts["mass"], parts["z"]
    m = len(uidx)
    chosen = np.full((m, k_slots), -1, dtype=np.int64)
    props = np.empty((m, k_slots), dtype=np.float64)
    used = np.zeros(m, dtype=np.float64)  # logging mass already placed in the slate
    for k in range(k_slots):
        todo = np.arange(m)
        for _ in range(200):
            if len(todo) == 0:
                break
            topic = inverse_cdf(mass[todo], rng.random(len(todo)))
            target = rng.random(len(todo)) * parts["weight_mass"][todo, topic]
            offset = np.empty(len(todo), dtype=np.int64)
            for tp in np.unique(topic):  # per-topic cumulative weights, items in creation order
                sel = np.flatnonzero(topic == tp)
                cum = av["cum"][av["starts"][tp] : av["ends"][tp]]
                offset[sel] = np.searchsorted(cum, target[sel], side="right")
            offset = np.minimum(offset, parts["count"][todo, topic] - 1)  # only items that exist
            item = av["order"][av["starts"][topic] + offset]
            repeat = (chosen[todo, :k] == item[:, None]).any(axis=1)
            chosen[todo[~repeat], k] = item[~repeat]
            todo = todo[repeat]
        for r in todo:  # pathological concentration: exact draw over the remaining items
            alive = np.flatnonzero(truth.item_created_s <= t_s[r])
            w = factor[r, truth.item_topic[alive]] * av["weight"][alive]
            w[np.isin(alive, chosen[r, :k])] = 0.0
            chosen[r, k] = alive[rng.choice(len(alive), p=w / w.sum())]
        item = chosen[:, k]
        own = factor[np.arange(m), truth.item_topic[item]] * av["weight"][item]
        remaining = z - used
        for r in np.flatnonzero(remaining <= 1e-8 * z):  # cancellation (greedy policies): sum exactly
            alive = np.flatnonzero(truth.item_created_s <= t_s[r])
            alive = alive[~np.isin(alive, chosen[r, :k])]
            remaining[r] = np.sum(factor[r, truth.item_topic[alive]] * av["weight"][alive])
        props[:, k] = np.minimum(own / remaining, 1.0)
        used += own
    return chosen, props
