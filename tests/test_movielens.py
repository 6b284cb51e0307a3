"""MovieLens adapter: the real ml-latest-small (skipped when absent) and tiny official-format fixtures."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from recsys.data.dataset import Dataset
from recsys.data.movielens import ML100K_GENRES, MOVIELENS_TEMPLATE, detect_variant, load_movielens
from recsys.errors import ConfigError, DataError
from recsys.splits import leave_last_out

UTC = timezone.utc
ML_LATEST_SMALL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens" / "ml-latest-small"


@pytest.fixture(scope="module")
def real() -> Dataset:
    if not (ML_LATEST_SMALL / "ratings.csv").exists():
        pytest.skip(f"ml-latest-small not found at {ML_LATEST_SMALL}")
    return load_movielens(ML_LATEST_SMALL)


# --- the real ml-latest-small ------------------------------------------------------------------


@pytest.mark.movielens
def test_split_equals_the_peers_split(real: Dataset) -> None:
    """The leave-last-out split (same-second ties in natural id order) gives the peers' exact targets."""
    peers = ML_LATEST_SMALL.parents[1] / "peers" / "ml-latest-small"
    if not (peers / "split_test_targets.parquet").exists():
        pytest.skip(f"peers' reference split not found at {peers}")
    split = leave_last_out(real.interactions)
    for stage in ("valid", "test"):
        theirs = (
            pl.read_parquet(peers / f"split_{stage}_targets.parquet")
            .select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
            .sort("user_id")
        )
        ours = split.targets(stage).select("user_id", "item_id").sort("user_id")
        assert ours.height == theirs.height == 610
        assert ours.equals(theirs), stage


@pytest.mark.movielens
def test_real_counts(real: Dataset) -> None:
    assert real.name == "movielens-latest-small"
    assert real.items.height == 9_742
    assert real.interactions.height == 100_836
    assert real.interactions["user_id"].n_unique() == 610
    assert real.interactions["item_id"].n_unique() == 9_724  # 18 movies are only tagged, never rated
    assert real.interactions["event"].unique().to_list() == ["rating"]
    assert real.interactions["ts"].dtype == pl.Datetime("us", "UTC")
    assert real.interactions["ts"].min() == datetime(1996, 3, 29, 18, 36, 55, tzinfo=UTC)
    weights = real.interactions["weight"]
    assert weights.min() == 0.5 and weights.max() == 5.0


@pytest.mark.movielens
def test_real_leave_last_out(real: Dataset) -> None:
    split = leave_last_out(real.interactions)
    counts = split.counts()
    assert counts["test_users"] == 610  # every user has at least 20 ratings
    assert counts["valid"] == 610
    assert counts["train"] == 100_836 - 2 * 610


@pytest.mark.movielens
def test_real_known_titles(real: Dataset) -> None:
    toy = real.items.filter(pl.col("item_id") == "1").row(0, named=True)
    assert toy["title"] == "Toy Story (1995)"
    assert toy["year"] == 1995
    assert toy["genres"] == "Adventure, Animation, Children, Comedy, Fantasy"
    assert toy["category"] == "Adventure"
    assert "pixar" in toy["tags"].split(", ")
    matrix = real.items.filter(pl.col("item_id") == "2571").row(0, named=True)
    assert matrix["title"] == "Matrix, The (1999)"  # quoted comma kept in one field
    assert matrix["year"] == 1999
    no_genre = real.items.filter(pl.col("item_id") == "143410").row(0, named=True)
    assert no_genre["genres"] == "" and no_genre["category"] is None
    assert real.items.filter(pl.col("item_id") == "40697")["year"][0] is None  # "Babylon 5": no year


@pytest.mark.movielens
def test_real_tags_are_capped_distinct_and_most_frequent_first(real: Dataset) -> None:
    raw = pl.read_csv(ML_LATEST_SMALL / "tags.csv", schema_overrides={"movieId": pl.String})
    counts = raw.group_by("movieId").agg(pl.col("tag").str.to_lowercase().n_unique().alias("n"))
    busiest = counts.sort("n", descending=True)["movieId"][0]
    tags = real.items.filter(pl.col("item_id") == busiest)["tags"][0].split(", ")
    assert len(tags) == 10
    assert len({t.lower() for t in tags}) == 10
    per_tag = raw.filter(pl.col("movieId") == busiest).group_by(pl.col("tag").str.to_lowercase()).len()
    shown = [per_tag.filter(pl.col("tag") == t.lower())["len"][0] for t in tags]
    assert shown == sorted(shown, reverse=True)
    assert (real.items["tags"] != "").sum() == raw["movieId"].n_unique()  # 1,572 tagged movies


@pytest.mark.movielens
def test_real_text_has_no_carriage_returns(real: Dataset) -> None:
    for column in ("title", "genres", "tags", "category"):
        assert not real.items[column].str.contains("\r").any(), column
    text = real.item_text()
    assert text["text"].str.contains("\r").sum() == 0
    assert real.text_template == MOVIELENS_TEMPLATE
    first = text.filter(pl.col("item_id") == "1")["text"][0]
    assert first.startswith("Toy Story (1995) | Adventure, Animation, Children, Comedy, Fantasy | ")
    no_tags = text.filter(pl.col("item_id") == "4")["text"][0]
    assert no_tags == "Waiting to Exhale (1995) | Comedy, Drama, Romance"  # no dangling " | "


# --- ml-latest format fixture --------------------------------------------------------------


RATINGS = "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n1,2,5.0,964981247\r\n2,2,0.5,1445714994\r\n"


def write_latest(folder: Path, ratings: str | None = None, tags: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.csv").write_bytes(
        b"movieId,title,genres\r\n"
        b"1,Toy Story (1995),Adventure|Animation|Children\r\n"
        b'2,"Matrix, The (1999)",Action|Sci-Fi\r\n'
        b"3,Babylon 5,(no genres listed)\r\n"
        b"4,Death Note: Desu n\xc3\xb4to (2006\xe2\x80\x932007),Animation\r\n"
    )
    (folder / "ratings.csv").write_text(
        ratings or RATINGS,
        newline="",
    )
    if tags is not None:
        (folder / "tags.csv").write_text(tags, newline="")
    return folder


TAGS = (
    "userId,movieId,tag,timestamp\r\n"
    "1,2,cyberpunk,1\r\n2,2,Cyberpunk,2\r\n3,2,cyberpunk,3\r\n"
    "1,2,philosophy,4\r\n2,2,philosophy,5\r\n"
    "1,2,keanu,6\r\n1,2,  action  ,7\r\n"
    "4,1,pixar,8\r\n"
)


def test_latest_fixture_items_and_interactions(tmp_path: Path) -> None:
    dataset = load_movielens(write_latest(tmp_path / "ml-latest-small", tags=TAGS))
    items = {row["item_id"]: row for row in dataset.items.to_dicts()}
    assert items["2"]["tags"] == "cyberpunk, philosophy, action, keanu"  # by count, ties alphabetical
    assert items["3"] == {
        "item_id": "3", "title": "Babylon 5", "year": None, "genres": "", "tags": "", "category": None,
    }  # fmt: skip
    assert items["4"]["year"] == 2006  # a year range keeps its first year
    assert items["1"]["genres"] == "Adventure, Animation, Children"
    assert dataset.interactions.to_dicts()[0] == {
        "user_id": "1",
        "item_id": "1",
        "ts": datetime(2000, 7, 30, 18, 45, 3, tzinfo=UTC),
        "weight": 4.0,
        "event": "rating",
    }
    assert dataset.item_text()["text"].to_list()[:3] == [
        "Toy Story (1995) | Adventure, Animation, Children | pixar",
        "Matrix, The (1999) | Action, Sci-Fi | cyberpunk, philosophy, action, keanu",
        "Babylon 5",
    ]


def test_latest_tags_cap(tmp_path: Path) -> None:
    tags = "userId,movieId,tag,timestamp\n" + "".join(f"1,1,tag{i:02d},{i}\n" for i in range(15))
    dataset = load_movielens(write_latest(tmp_path, tags=tags), max_tags=3)
    assert dataset.items.filter(pl.col("item_id") == "1")["tags"][0] == "tag00, tag01, tag02"


def test_rating_on_unknown_movie_is_an_error(tmp_path: Path) -> None:
    ratings = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,999,5.0,964981247\n"
    folder = write_latest(tmp_path, ratings=ratings)
    with pytest.raises(DataError) as info:
        load_movielens(folder)
    assert info.value.file == str(folder / "ratings.csv")
    assert info.value.column == "item_id" and info.value.row == 2
    assert "'999'" in str(info.value)


def test_tag_on_unknown_movie_is_an_error(tmp_path: Path) -> None:
    folder = write_latest(tmp_path, tags="userId,movieId,tag,timestamp\n1,1,fun,1\n1,77,odd,2\n")
    with pytest.raises(DataError) as info:
        load_movielens(folder)
    assert info.value.file == str(folder / "tags.csv")
    assert info.value.column == "movieId" and info.value.row == 2


def test_missing_movie_column(tmp_path: Path) -> None:
    folder = write_latest(tmp_path)
    (folder / "movies.csv").write_text("movieId,name,genres\n1,Heat,Action\n")
    with pytest.raises(DataError) as info:
        load_movielens(folder)
    assert info.value.column == "title"
    assert info.value.file == str(folder / "movies.csv")


def test_bad_rating_value(tmp_path: Path) -> None:
    folder = write_latest(tmp_path, ratings="userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,x,2\n")
    with pytest.raises(DataError) as info:
        load_movielens(folder)
    assert info.value.column == "weight" and info.value.row == 2


# --- ml-100k fixture (latin-1 u.item) ---------------------------------------------------------


def flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in ML100K_GENRES)


def write_100k(folder: Path, u_data: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    toy_genres = flags("Animation", "Children's", "Comedy")
    lines = [
        f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|{toy_genres}",
        f"2|Misérables, Les (1995)|01-Jan-1995||http://x|{flags('Drama', 'Musical')}",
        f"3|unknown||||{flags('unknown')}",
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "u.data").write_text(u_data or "196\t1\t3\t881250949\n186\t2\t5\t891717742\n196\t2\t1\t881251000\n")
    (folder / "u.genre").write_text("unknown|0\nAction|1\n")
    return folder


def test_100k_fixture(tmp_path: Path) -> None:
    folder = write_100k(tmp_path / "ml-100k")
    assert detect_variant(folder) == "100k"
    dataset = load_movielens(folder)
    assert dataset.name == "movielens-100k"
    items = {row["item_id"]: row for row in dataset.items.to_dicts()}
    assert items["2"]["title"] == "Misérables, Les (1995)"  # decoded from latin-1 byte 0xe9
    assert items["2"]["genres"] == "Drama, Musical"
    assert items["1"]["genres"] == "Animation, Children's, Comedy"
    assert items["1"]["category"] == "Animation"
    assert items["3"]["genres"] == "" and items["3"]["year"] is None  # the 'unknown' flag is no genre
    assert dataset.interactions.height == 3
    assert dataset.interactions["ts"][0] == datetime.fromtimestamp(881250949, tz=UTC)
    assert dataset.interactions["weight"].to_list() == [3.0, 5.0, 1.0]


def test_100k_utf8_copy_is_read_as_utf8(tmp_path: Path) -> None:
    folder = write_100k(tmp_path)
    text = (folder / "u.item").read_bytes().decode("latin-1")
    (folder / "u.item").write_bytes(text.encode("utf-8"))
    dataset = load_movielens(folder, variant="100k")
    assert dataset.items.filter(pl.col("item_id") == "2")["title"][0] == "Misérables, Les (1995)"


def test_100k_bad_line_names_its_row(tmp_path: Path) -> None:
    folder = write_100k(tmp_path)
    with (folder / "u.item").open("ab") as handle:
        handle.write(b"4|Short line|01-Jan-1995\n")
    with pytest.raises(DataError) as info:
        load_movielens(folder)
    assert info.value.file == str(folder / "u.item") and info.value.row == 4
    assert "expected 24" in str(info.value)


def test_100k_rating_on_unknown_item(tmp_path: Path) -> None:
    folder = write_100k(tmp_path, u_data="196\t1\t3\t881250949\n196\t9\t3\t881250949\n")
    with pytest.raises(DataError) as info:
        load_movielens(folder)
    assert info.value.file == str(folder / "u.data") and info.value.row == 2
    assert info.value.column == "item_id"


# --- ml-1m fixture (latin-1 movies.dat, '::' separated) ----------------------------------------


def write_1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    movies = "1::Toy Story (1995)::Animation|Children's|Comedy\n73::Misérables, Les (1995)::Drama|Musical\n"
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::73::3::978302109\n2::73::4::978301968\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n")
    return folder


def test_1m_fixture(tmp_path: Path) -> None:
    folder = write_1m(tmp_path / "ml-1m")
    assert detect_variant(folder) == "1m"
    dataset = load_movielens(tmp_path)  # the archive's parent folder works too
    assert dataset.name == "movielens-1m"
    items = {row["item_id"]: row for row in dataset.items.to_dicts()}
    assert items["73"]["title"] == "Misérables, Les (1995)"
    assert items["73"]["genres"] == "Drama, Musical" and items["73"]["year"] == 1995
    assert dataset.interactions["user_id"].to_list() == ["1", "1", "2"]
    assert dataset.interactions["item_id"].to_list() == ["1", "73", "73"]
    assert dataset.interactions["weight"].to_list() == [5.0, 3.0, 4.0]
    assert dataset.interactions["ts"][0] == datetime.fromtimestamp(978300760, tz=UTC)


def test_1m_malformed_ratings(tmp_path: Path) -> None:
    folder = write_1m(tmp_path)
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1:1::3::978302109\n")
    with pytest.raises(DataError) as info:
        load_movielens(folder)
    assert info.value.file == str(folder / "ratings.dat")


# --- detection and options ---------------------------------------------------------------


def test_detection_failures(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_movielens(tmp_path)
    assert "no MovieLens files" in str(info.value)
    with pytest.raises(DataError):
        load_movielens(tmp_path / "absent")
    folder = write_latest(tmp_path / "x")
    with pytest.raises(DataError) as info:
        load_movielens(folder, variant="1m")
    assert "ml-1m" in str(info.value)
    with pytest.raises(ConfigError):
        load_movielens(folder, variant="20m")  # type: ignore[arg-type]


def test_custom_template(tmp_path: Path) -> None:
    dataset = load_movielens(write_latest(tmp_path), text_template="{title} ({year})")
    assert dataset.item_text()["text"].to_list()[:3] == [
        "Toy Story (1995) (1995)",
        "Matrix, The (1999) (1999)",
        "Babylon 5",
    ]


def test_drop_rule_for_hand_trimmed_copies(tmp_path: Path) -> None:
    ratings = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,999,5.0,964981247\n2,998,1.0,1\n"
    tags = "userId,movieId,tag,timestamp\n1,1,fun,1\n1,77,odd,2\n"
    dataset = load_movielens(write_latest(tmp_path, ratings=ratings, tags=tags), unknown_items="drop")
    assert dataset.notes["dropped_unknown_items"] == 2
    assert dataset.interactions["item_id"].to_list() == ["1"]
    assert dataset.items.filter(pl.col("item_id") == "1")["tags"][0] == "fun"
