"""Structure that item text cannot see: hidden bundles across product types, vague items.

Internal to :mod:`towers.data.generate`. The default generator makes a shopper's next item
follow from item text (a session stays on one product type, complements are named types), so
text towers look strong on it. Real rating data (MovieLens, retail baskets) also has taste
that crosses product types and items whose text says little. Two switches add that:

* **Bundles** (``bundle_strength``, ``bundle_size``): the catalogue is cut at random into
  hidden bundles of ``bundle_size`` items; a random permutation puts items of unrelated
  product types together (with a few hundred types, two members share a type with
  probability about ``bundle_size / n_types``). Each user has a *home bundle* (the bundle of
  their first viewed item). A share ``bundle_strength`` of views is redrawn from a bundle: a
  session's first view from the user's home bundle, a later view from the bundle of the
  session's first item. Only who-bought-what (item identity) reveals the bundles.
* **Vague items** (``vague_item_share``): that share of items get a generic title and
  description ("Signature piece no. 4821", "A customer favourite.") and empty product type,
  brand, colour, material and size columns; department and price band stay. Their behaviour
  is unchanged (it follows the hidden attributes); only what the catalogue says is lost.

Both draw only from the random stream given to them, so with both off the other streams, and
the generated files, are exactly those of the default generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Bundles", "apply_bundles", "make_bundles", "make_vague"]

#: Words of vague titles and descriptions: no product type, brand, colour or material.
VAGUE_ADJECTIVES = (
    "Classic", "Signature", "Everyday", "Essential", "Original", "Modern", "Simple", "Select",
    "Favourite", "Trusted", "Popular", "Standard",
)  # fmt: skip
VAGUE_NOUNS = ("item", "piece", "pick", "find", "product", "edition", "design", "choice")
VAGUE_DESCRIPTIONS = (
    "A customer favourite.",
    "Good value and made to last.",
    "Our most versatile design.",
    "A thoughtful choice for every day.",
    "Loved by many of our shoppers.",
    "Quality you can count on.",
    "A dependable pick at a fair price.",
    "Simple, useful and well made.",
)
#: Item columns emptied on a vague item (the text that would name its kind or maker).
VAGUE_EMPTY_COLUMNS = ("product_type", "brand", "color", "material", "size")


@dataclass(frozen=True)
class Bundles:
    """Hidden bundles: members of bundle ``b`` are ``members[start[b] : start[b] + count[b]]``
    (item rows); ``bundle_of`` maps an item row to its bundle."""

    members: np.ndarray  # (n_items,) int64 item rows, grouped by bundle
    start: np.ndarray  # (n_bundles,) int64
    count: np.ndarray  # (n_bundles,) int64, bundle_size (the last bundle may be smaller)
    bundle_of: np.ndarray  # (n_items,) int64
    position: np.ndarray  # (n_items,) int64 index of the item inside its bundle
    cum: np.ndarray  # (n_items + 1,) float64 cumulative popularity of ``members``, from 0

    @property
    def n_bundles(self) -> int:
        return len(self.start)


def make_bundles(popularity: np.ndarray, bundle_size: int, rng: np.random.Generator) -> Bundles:
    """Cut a random permutation of the item rows into bundles of ``bundle_size`` (the last
    one holds the remainder, at least one item); members are drawn in proportion to their
    latent ``popularity`` (one positive weight per item), so the popularity curve stays."""
    n_items = len(popularity)
    members = rng.permutation(n_items).astype(np.int64)
    slot = np.arange(n_items, dtype=np.int64)
    bundle_of = np.empty(n_items, dtype=np.int64)
    bundle_of[members] = slot // bundle_size
    position = np.empty(n_items, dtype=np.int64)
    position[members] = slot % bundle_size
    start = np.arange(0, n_items, bundle_size, dtype=np.int64)
    count = np.minimum(bundle_size, n_items - start)
    cum = np.concatenate([[0.0], np.cumsum(popularity[members])])
    return Bundles(members, start, count, bundle_of, position, cum)


def _mate(bundles: Bundles, anchor: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A member of each ``anchor`` item's bundle drawn by popularity, the next member when
    that is the anchor itself (so never the anchor unless its bundle has one item); ``u``
    are uniforms in [0, 1)."""
    b = bundles.bundle_of[anchor]
    start, count = bundles.start[b], bundles.count[b]
    lo, hi = bundles.cum[start], bundles.cum[start + count]
    slot = np.searchsorted(bundles.cum, lo + u * (hi - lo), side="right") - 1
    pos = np.clip(slot - start, 0, count - 1)
    pos = np.where(pos == bundles.position[anchor], (pos + 1) % count, pos)
    return bundles.members[start + pos]


def apply_bundles(
    v_user: np.ndarray,
    v_sess: np.ndarray,
    v_item: np.ndarray,
    strength: float,
    bundles: Bundles,
    rng: np.random.Generator,
) -> np.ndarray:
    """Redraw a share ``strength`` of views from hidden bundles (see the module doc).

    Args:
        v_user, v_sess, v_item: per view, in generation order (sessions grouped by user and
            in time order, views in order within a session), item rows in ``v_item``.
        strength: probability in [0, 1] that a view is redrawn; a user's first view never is.

    Returns:
        The new item row of every view.
    """
    n = len(v_item)
    if n == 0 or strength <= 0.0:
        return v_item
    idx = np.arange(n)
    sess_first = np.ones(n, dtype=bool)
    sess_first[1:] = v_sess[1:] != v_sess[:-1]
    user_first = np.ones(n, dtype=bool)
    user_first[1:] = v_user[1:] != v_user[:-1]
    redraw = (rng.random(n) < strength) & ~user_first
    u = rng.random(n)
    # A session's first view: from the user's home bundle (their first view's bundle).
    home_anchor = v_item[np.maximum.accumulate(np.where(user_first, idx, 0))]
    out = v_item.copy()
    first_redraw = redraw & sess_first
    out[first_redraw] = _mate(bundles, home_anchor[first_redraw], u[first_redraw])
    # Later views: from the bundle of the session's (possibly redrawn) first item.
    sess_anchor = out[np.maximum.accumulate(np.where(sess_first, idx, 0))]
    later = redraw & ~sess_first
    out[later] = _mate(bundles, sess_anchor[later], u[later])
    return out


def make_vague(table: pa.Table, share: float, rng: np.random.Generator) -> pa.Table:
    """The items ``table`` with a share ``share`` of rows made vague (see the module doc).

    Titles read ``"<Adjective> <noun> no. <item_id>"``, unique per item.
    """
    n = table.num_rows
    if n == 0 or share <= 0.0:
        return table
    vague = rng.random(n) < share
    adj = np.asarray(VAGUE_ADJECTIVES, dtype=object)[rng.integers(0, len(VAGUE_ADJECTIVES), n)]
    noun = np.asarray(VAGUE_NOUNS, dtype=object)[rng.integers(0, len(VAGUE_NOUNS), n)]
    desc = np.asarray(VAGUE_DESCRIPTIONS, dtype=object)[rng.integers(0, len(VAGUE_DESCRIPTIONS), n)]
    ids = table.column("item_id").to_numpy()
    titles = [f"{a} {w} no. {i}" for a, w, i in zip(adj.tolist(), noun.tolist(), ids.tolist())]
    mask = pa.array(vague)
    replaced = {
        "title": pa.array(titles, pa.string()),
        "description": pa.array(desc.tolist(), pa.string()),
        **{c: pa.array([""] * n, pa.string()) for c in VAGUE_EMPTY_COLUMNS},
    }
    for name, new in replaced.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.if_else(mask, new, table.column(name)))
    return table
