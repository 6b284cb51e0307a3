"""The `recsys` command line.

Every command imports its heavy dependencies inside its body, so `recsys --help` stays fast.
User-fixable problems (`RecsysError`) print one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(
    help="recsys: a text-first recommender (data, baselines, encoders, index, ranker, service).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Convert, validate, split and synthesise datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

FORMAT_HELP = (
    "Source format: movielens, mind, generic (CSV/TSV/parquet/JSONL + --map), amazon (Amazon Reviews "
    "2018/2023: --reviews + --metadata) or dataset (a converted folder)."
)


def _console():
    from rich.console import Console

    return Console(stderr=False)


def _print_summary(title: str, summary: dict) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        table.add_row(str(key), f"{value:,}" if isinstance(value, int) else str(value))
    _console().print(table)


@data_app.command("convert")
def data_convert(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write (items/interactions parquet)."),
    fmt: str = typer.Option("movielens", "--format", "-f", help=FORMAT_HELP),
    path: Path | None = typer.Option(None, "--path", help="Source folder (movielens, mind)."),
    items: Path | None = typer.Option(
        None, "--items", "--metadata", help="Items file (generic), or product metadata JSONL (amazon)."
    ),
    interactions: Path | None = typer.Option(
        None, "--interactions", "--reviews", help="Interactions file (generic), or reviews JSONL (amazon)."
    ),
    impressions: Path | None = typer.Option(None, "--impressions", help="Impressions file (generic)."),
    mapping: list[str] | None = typer.Option(
        None,
        "--map",
        help="Column mapping SOURCE=TARGET; repeatable. A dotted "
        "SOURCE reads a nested JSON field: --map details.publisher=brand.",
    ),
    delimiter: str | None = typer.Option(None, "--delimiter", help="CSV delimiter (default ',' or tab for .tsv)."),
    template: str | None = typer.Option(None, "--template", help='Item text template, e.g. "{title} | {genres}".'),
    drop_unknown_items: bool = typer.Option(
        False,
        "--drop-unknown-items",
        help="Drop (and count) interactions on items missing from the catalog instead of failing (amazon: always).",
    ),
    dedupe_items: str | None = typer.Option(
        None,
        "--dedupe-items",
        help="Repeated item ids: first or last keeps "
        "that copy and counts the rest, error refuses the file (default error; "
        "amazon: first).",
    ),
    clean_html: bool | None = typer.Option(
        None,
        "--clean-html/--no-clean-html",
        help="Strip HTML tags and unescape entities in item text (default: on for JSON items and amazon).",
    ),
    list_joiner: str | None = typer.Option(
        None, "--list-joiner", help='Joins list values in the item text (default ", ").'
    ),
) -> None:
    """Read a source, validate it, and write a canonical dataset folder.

    Inputs may be gzip or zstd compressed (items.json.gz). Whitespace in item text is always normalised.
    """
    from jobs.data_jobs import CatalogOptions, load_source
    from recsys.data.readers import parse_mapping

    catalog = CatalogOptions(duplicates=dedupe_items, clean_html=clean_html, list_joiner=list_joiner)  # type: ignore[arg-type]  # typer gives str; callee checks it
    dataset = load_source(
        fmt,  # type: ignore[arg-type]  # typer gives str; callee checks it
        path,
        items,
        interactions,
        impressions,
        parse_mapping(mapping),
        delimiter,
        template,
        drop_unknown_items,
        catalog,
    )
    dataset.save(out)
    _print_summary(f"dataset written to {out}", dataset.summary())
    for note, what in (
        ("dropped_unknown_items", "interactions on unknown items"),
        ("duplicate_items_dropped", "repeated item rows"),
        ("duplicate_reviews_dropped", "repeated reviews"),
    ):
        count = dataset.notes.get(note)
        if count:
            typer.echo(f"warning: dropped {count} {what}", err=True)
    typer.echo(f"check the item text before training: recsys data show --data {out}")


@data_app.command("validate")
def data_validate(
    fmt: str = typer.Option("dataset", "--format", "-f", help=FORMAT_HELP),
    path: Path | None = typer.Option(None, "--path", help="Dataset or source folder."),
    items: Path | None = typer.Option(None, "--items"),
    interactions: Path | None = typer.Option(None, "--interactions"),
    impressions: Path | None = typer.Option(None, "--impressions"),
    mapping: list[str] | None = typer.Option(None, "--map", help="Column mapping SOURCE=TARGET; repeatable."),
    delimiter: str | None = typer.Option(None, "--delimiter"),
) -> None:
    """Check data against the contracts; print a summary, or one line naming file, column and row."""
    from jobs.data_jobs import load_source
    from recsys.data.readers import parse_mapping

    dataset = load_source(fmt, path, items, interactions, impressions, parse_mapping(mapping), delimiter)  # type: ignore[arg-type]  # typer gives str; callee checks it
    _print_summary("valid", dataset.summary())


@data_app.command("show")
def data_show(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (from `recsys data convert`)."),
    items: int = typer.Option(3, "--items", "-n", help="How many items (a seeded random sample) to show."),
    user: str | None = typer.Option(None, "--user", help="The user whose history is shown (default: a typical one)."),
    item_tokens: int = typer.Option(32, "--item-tokens", help="The item tower's token budget."),
    history_tokens: int = typer.Option(128, "--history-tokens", help="The text tower's history token budget."),
    base_model: str | None = typer.Option(None, "--base-model", help="Whose tokenizer counts (default MiniLM)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the item sample."),
) -> None:
    """Print what the model will read: a few items' text with token counts, and one user's history text."""
    from jobs.data_show import ShowOptions, show_dataset

    show_dataset(
        data,
        ShowOptions(
            items=items,
            user=user,
            item_tokens=item_tokens,
            history_tokens=history_tokens,
            base_model=base_model,
            seed=seed,
        ),
        echo=typer.echo,
    )


@data_app.command("split")
def data_split(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (from `recsys data convert` or `synth`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Split folder to write."),
    method: str = typer.Option("leave-last-out", "--method", help="leave-last-out or time-cut."),
    test_start: str | None = typer.Option(None, "--test-start", help="time-cut: first test timestamp (ISO)."),
    valid_start: str | None = typer.Option(None, "--valid-start", help="time-cut: first validation timestamp."),
    min_interactions: int = typer.Option(
        3, "--min-interactions", help="leave-last-out: users with fewer stay in train."
    ),
) -> None:
    """Split interactions for evaluation (temporal leave-last-out or a global time cut)."""
    from jobs.data_jobs import split_dataset
    from recsys.data.dataset import Dataset

    split = split_dataset(Dataset.load(data), method, test_start, valid_start, min_interactions)  # type: ignore[arg-type]  # typer gives str; callee checks it
    split.save(out)
    _print_summary(f"{split.kind} split written to {out}", split.counts())


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    n_interactions: int = typer.Option(20_000, "--interactions", "-n", help="Number of interactions."),
    n_users: int | None = typer.Option(None, "--users"),
    n_items: int | None = typer.Option(None, "--items"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Generate a synthetic dataset with meaningful item text, drifting tastes and logged impressions."""
    from recsys.data.synthetic import generate

    dataset = generate(n_interactions=n_interactions, n_users=n_users, n_items=n_items, seed=seed)
    dataset.save(out)
    _print_summary(f"synthetic dataset written to {out}", dataset.summary())


@app.command("quickstart")
def quickstart_command(
    work: Path = typer.Option(Path(".recsys/quickstart"), "--work", "-w", help="Folder for all state."),
    dataset: str = typer.Option("synthetic", "--dataset", help="synthetic or movielens-small."),
    path: Path | None = typer.Option(None, "--path", help="The ml-latest-small folder (for movielens-small)."),
    data: Path | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Your own data: a dataset folder from "
        "`recsys data convert` (budgets are picked from its size and printed).",
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="LoRA steps (default: picked from the data size; 30 synthetic, 200 MovieLens)."
    ),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start the API and send sample requests."),
    users: int = typer.Option(3, "--users", help="Users whose recommendations are printed."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (default: all cores)."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the work folder first."),
) -> None:
    """The main job end to end: data -> encoder -> index -> ranker -> A/B -> API -> sample recommendations.

    Resumable: finished steps are reused, so a rerun only re-serves (~10 s). Thin data (no user with 3
    interactions, a single item, no usable timestamps) is refused before any training.
    """
    from jobs.quickstart import QuickstartConfig, run_quickstart

    run_quickstart(
        QuickstartConfig(
            work=work,
            dataset=dataset,
            path=path,
            steps=steps,
            serve=serve,
            data=data,
            users_to_show=users,
            threads=threads,
            fresh=fresh,
            echo=typer.echo,
        )
    )


@data_app.command("ingest")
def data_ingest(
    events: Path = typer.Option(..., "--events", help="The service's event log (events/events.sqlite in the store)."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder whose interactions receive the events."),
    compact: bool = typer.Option(
        False, "--compact/--no-compact", help="Delete the ingested events from the log afterwards."
    ),
) -> None:
    """Merge logged real-time events into the dataset's interactions (idempotent; atomic rewrite)."""
    from jobs.ingest_events import ingest_events
    from recsys.errors import ConfigError

    if not events.is_file():
        raise ConfigError(f"--events {events}: no such event log")
    typer.echo(ingest_events(events, data, compact=compact).summary_line())


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="Dataset to download: movielens-small."),
    out: Path = typer.Option(Path("data"), "--out", "-o", help="Folder to unpack into."),
    url: str | None = typer.Option(None, "--url", help="Mirror URL of the zip (its .md5 must sit beside it)."),
    md5: str | None = typer.Option(None, "--md5", help="Expected MD5 (default: the published .md5 file)."),
) -> None:
    """Download the official MovieLens ml-latest-small zip, check its MD5, unpack it (needs the internet)."""
    from jobs.fetch import fetch_dataset

    folder = fetch_dataset(name, out, url=url, md5=md5)
    typer.echo(f"{name} ready in {folder}; next: recsys quickstart --dataset {name} --path {folder}")


@app.command("baselines")
def baselines(
    split: Path = typer.Option(..., "--split", "-s", help="Split folder (from `recsys data split`)."),
    models: str = typer.Option("mostpop,itemknn", "--models", help="Comma-separated: mostpop, itemknn."),
    stage: str = typer.Option("test", "--stage", help="valid or test."),
    neighbors: int | None = typer.Option(None, "--neighbors", help="ItemKNN neighbourhood size."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for metrics.json and top-K lists."),
) -> None:
    """Score MostPop and ItemKNN with full ranking over the catalog (history excluded, `recsys.splits`)."""
    from rich.table import Table

    from jobs.baselines_job import evaluate_baselines, results_table, write_results
    from recsys.splits import Split

    names = [m.strip() for m in models.split(",") if m.strip()]
    params = {"itemknn": {"neighbors": neighbors}} if neighbors else None
    results = evaluate_baselines(Split.load(split), names, stage=stage, params=params)  # type: ignore[arg-type]  # typer gives str; callee checks it
    columns = ("ndcg@10", "hr@10", "mrr@10", "hr@50", "coverage@10")
    table = Table(title=f"baselines on {split} ({stage})")
    for header in ("system", *columns, "seconds"):
        table.add_column(header)
    for row in results_table(results, columns):
        table.add_row(*row)
    _console().print(table)
    if out:
        write_results(results, out)
        typer.echo(f"wrote {out / 'metrics.json'}")


@app.command("train-encoder")
def train_encoder_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder."),
    split: Path = typer.Option(..., "--split", "-s", help="Split folder (leave-last-out)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder for adapter, vectors, towers and metrics."),
    tower: str = typer.Option("text", "--tower", help="User tower: text (default), sequence or pooled."),
    method: str = typer.Option("lora", "--method", help="lora, adalora, ia3, full or frozen (zero-shot)."),
    base_model: str | None = typer.Option(None, "--base-model", help="Local folder or hub name; default MiniLM."),
    steps: int = typer.Option(200, "--steps", help="Text-stage optimiser steps (the CPU budget)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    history_tokens: int = typer.Option(128, "--history-tokens", help="Token budget of the history text."),
    item_tokens: int = typer.Option(32, "--item-tokens", help="Token budget of one item's text."),
    lr: float | None = typer.Option(None, "--lr", help="Default 1e-3 for adapters, 3e-5 for full."),
    eval_every: int = typer.Option(100, "--eval-every", help="Steps between validation passes."),
    hard_negatives: int = typer.Option(
        0,
        "--hard-negatives",
        help="Per example, negatives drawn from the target's 50 nearest items under the frozen model (0: off).",
    ),
    catalog_negatives: bool = typer.Option(
        True,
        "--catalog-negatives/--sampled-negatives",
        help="Softmax over the whole catalog (a detached item bank refreshed at "
        "each evaluation) instead of in-batch + random negatives.",
    ),
    popularity_prior: bool = typer.Option(
        True,
        "--popularity-prior/--no-popularity-prior",
        help="Text tower: add beta*log(1+count) per item, beta chosen on the validation targets (0 allowed).",
    ),
    train_prior: float = typer.Option(
        0.05,
        "--train-prior",
        min=0.0,
        help="Beta of a popularity prior inside the training logits (0: off), so "
        "the encoder learns what popularity does not explain.",
    ),
    seq_epochs: int = typer.Option(
        40, "--seq-epochs", help="Sequence tower: epochs of the cosine schedule (early-stopped on validation)."
    ),
    seq_items: str = typer.Option(
        "hybrid",
        "--seq-items",
        help="Sequence tower item vectors: hybrid (text projection + id embedding of "
        "warm items), id (SASRec), or text.",
    ),
    seq_max_len: int = typer.Option(200, "--seq-max-len", help="Sequence tower: most recent items it reads."),
    seq_positions: str = typer.Option(
        "from_start",
        "--seq-positions",
        help="Sequence tower: position 0 is the window's oldest item (from_start, SASRec's) or its newest (from_end).",
    ),
    seq_dim: int = typer.Option(128, "--seq-dim", help="Sequence tower width."),
    seq_layers: int = typer.Option(2, "--seq-layers", help="Sequence tower transformer layers."),
    seq_dropout: float = typer.Option(0.5, "--seq-dropout", help="Sequence tower dropout."),
    seq_lr: float = typer.Option(2e-3, "--seq-lr", help="Sequence tower learning rate (Adam)."),
    seq_patience: int = typer.Option(
        8, "--seq-patience", help="Sequence tower: epochs without a better validation NDCG@10 before stopping."
    ),
    seq_refit: bool = typer.Option(
        True,
        "--seq-refit/--no-seq-refit",
        help="Retrain the sequence tower on train + validation for the chosen epochs.",
    ),
    seq_minutes: float | None = typer.Option(None, "--seq-minutes", help="Sequence tower: wall-clock cap."),
    seq_id_dropout: float = typer.Option(
        0.0,
        "--seq-id-dropout",
        min=0.0,
        max=1.0,
        help="Hybrid items: share of id embeddings dropped per training step, so "
        "the text part learns to score items alone (cold items).",
    ),
    seq_text_loss: float | None = typer.Option(
        None,
        "--seq-text-loss",
        min=0.0,
        help="Hybrid items: weight of a text-only softmax that teaches the text "
        "part to score items alone, with a softmax over items seen in training: "
        "the cold-item mode (1.0 measured; default off).",
    ),
    seq_holdout_tail: int = typer.Option(
        8,
        "--seq-holdout-tail",
        min=0,
        help="With a refit: items per user the early-stopped tower leaves out, so "
        "the ranker trains on scores it did not fit (keep >= the ranker's "
        "--extra-cuts; 0 turns stacking off).",
    ),
    seed: int = typer.Option(0, "--seed"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (default: all cores)."),
    register: bool = typer.Option(True, "--register/--no-register", help="Log and register in MLflow."),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias (challenger/champion) at it."),
) -> None:
    """Fine-tune the text encoder (PEFT), train the user tower, evaluate on the split; resumable.

    The run is logged to MLflow (embedded SQLite store under ./.recsys unless MLFLOW_TRACKING_URI is
    set) and registered as <prefix>-encoder; `--alias` moves an alias to the new version.
    """
    from dataclasses import replace

    from encoders.sequence import SequenceConfig
    from encoders.sequence_training import SequenceTrainConfig
    from encoders.text_training import TextTrainConfig
    from jobs.train_encoder import train_encoder
    from recsys.data.dataset import Dataset
    from recsys.splits import Split

    text_config = TextTrainConfig(
        method=method,
        max_steps=steps,
        batch_size=batch_size,
        history_tokens=history_tokens,
        item_tokens=item_tokens,
        lr=lr,
        eval_every=eval_every,
        seed=seed,
        threads=threads,
        hard_negatives=hard_negatives,
        catalog_negatives=catalog_negatives,
        popularity_prior=popularity_prior,
        train_prior_beta=train_prior,
    )
    seq_train = replace(
        SequenceTrainConfig(),
        epochs=seq_epochs,
        lr=seq_lr,
        patience=seq_patience,
        refit=seq_refit,
        seed=seed,
        threads=threads,
        max_seconds=None if seq_minutes is None else seq_minutes * 60,
        holdout_tail=seq_holdout_tail,
    )
    if seq_text_loss is not None:
        seq_train = replace(seq_train, text_loss=seq_text_loss)
    seq_model = SequenceConfig(
        dim=seq_dim,
        layers=seq_layers,
        max_len=seq_max_len,
        positions=seq_positions,
        dropout=seq_dropout,
        items=seq_items,
        id_dropout=seq_id_dropout,
    )
    run = train_encoder(
        Dataset.load(data),
        Split.load(split),
        out,
        tower=tower,
        base_model=base_model,
        text_config=text_config,
        sequence_config=seq_model,
        sequence_train_config=seq_train,
    )
    columns = ("ndcg@10", "hr@10", "mrr@10", "hr@50")
    typer.echo(
        f"{tower}/{method} test "
        + " ".join(f"{c}={run.test[c]:.4f}" for c in columns)
        + f" | valid ndcg@10={run.valid['ndcg@10']:.4f} | timings {run.timings} | wrote {out}"
    )
    if register:
        from jobs.log_encoder import log_encoder_run

        model = log_encoder_run(out, alias=alias)
        typer.echo(f"registered {model.name} version {model.version}" + (f" as @{alias}" if alias else ""))


@app.command("train-ranker")
def train_ranker_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder."),
    split: Path = typer.Option(..., "--split", "-s", help="Split folder (leave-last-out)."),
    encoder: str = typer.Option(
        ..., "--encoder", "-e", help="Encoder: champion, models:/<prefix>-encoder@alias or a local folder."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder for the model, top-K lists and metrics."),
    retrieval_k: int = typer.Option(200, "--retrieval-k", help="Candidates from the encoder per query."),
    covisit_k: int = typer.Option(100, "--covisit-k", help="Co-visitation candidates per query."),
    popular_k: int = typer.Option(50, "--popular-k", help="Recent-popularity candidates per query."),
    text_k: int = typer.Option(100, "--text-k", help="Candidates by text similarity to the user's recent items."),
    item_content: bool = typer.Option(
        True, "--item-content/--no-item-content", help="Text candidates and text-similarity features."
    ),
    extra_cuts: int = typer.Option(8, "--extra-cuts", help="Training targets per user from its training part."),
    graded: bool = typer.Option(True, "--graded/--binary", help="Grade labels by rating/weight when present."),
    learning_rate: float = typer.Option(0.03, "--learning-rate"),
    num_leaves: int = typer.Option(15, "--num-leaves"),
    seed: int = typer.Option(0, "--seed"),
    bagging_seeds: int = typer.Option(
        5, "--bagging-seeds", help="LightGBM boosters (seeds seed, seed+1, ...) averaged into one ranker."
    ),
    threads: int = typer.Option(0, "--threads", help="Threads for torch and LightGBM (0: all cores)."),
    register: bool = typer.Option(True, "--register/--no-register", help="Log and register in MLflow."),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias (challenger/champion) at it."),
) -> None:
    """Train the LightGBM LambdaRank ranker over the encoder's candidates (+ co-visitation, popularity).

    Writes the booster (native text format), test top-50 lists of the ranker and of the encoder
    alone, metrics and an importance plot to --out; logs and registers <prefix>-ranker in MLflow.
    """
    from encoders.registry import resolve_encoder
    from jobs.train_ranker import train_ranker
    from ranking.candidates import CandidateConfig
    from ranking.training import RankerConfig
    from recsys.data.dataset import Dataset
    from recsys.splits import Split

    config = RankerConfig(
        candidates=CandidateConfig(retrieval_k=retrieval_k, covisit_k=covisit_k, popular_k=popular_k, text_k=text_k),
        item_content=item_content,
        extra_cuts=extra_cuts,
        graded=graded,
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        seed=seed,
        bagging_seeds=bagging_seeds,
        threads=threads,
    )
    config.check()
    if threads:
        import torch

        torch.set_num_threads(threads)
    loaded = resolve_encoder(encoder, cache_dir=out / "encoders")
    run = train_ranker(Dataset.load(data), Split.load(split), loaded, out, config)
    typer.echo(run.summary_line() + f" | wrote {out}")
    if register:
        from jobs.log_ranker import log_ranker_run

        model = log_ranker_run(out, alias=alias)
        typer.echo(f"registered {model.name} version {model.version}" + (f" as @{alias}" if alias else ""))


@app.command("ab")
def ab(
    split: Path = typer.Option(..., "--split", "-s", help="Split folder both systems are scored on."),
    a: str = typer.Option(
        ...,
        "--a",
        help="System A: mostpop, itemknn, a top-K parquet (user_id,item_id,rank), "
        "a train-encoder/train-ranker run folder, or a model: encoder:<ref>, ranker:<ref>, "
        "models:/recsys-ranker@champion.",
    ),
    b: str = typer.Option(..., "--b", help="System B (same forms as A)."),
    data: Path | None = typer.Option(None, "--data", "-d", help="Dataset folder (needed when a system is a model)."),
    stage: str = typer.Option("test", "--stage", help="valid or test."),
    out: Path = typer.Option(Path("ab-report"), "--out", "-o", help="Report folder (report.md, report.json, PNGs)."),
    impressions: Path | None = typer.Option(None, "--impressions", help="Impression log for off-policy estimates."),
    clip: float | None = typer.Option(None, "--clip", help="IPS weight clipping for off-policy estimates."),
    bootstrap: int = typer.Option(5000, "--bootstrap", help="Bootstrap resamples for the CIs."),
    test: str = typer.Option("randomization", "--test", help="p-values: randomization or ttest."),
    seed: int = typer.Option(0, "--seed"),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the report to MLflow as an evaluation run."),
) -> None:
    """Offline A/B: paired differences with bootstrap CIs, Holm-corrected p-values, segments, report."""
    from jobs.ab_job import OPEConfig, StatsConfig, run_ab

    log_fn = None
    if log:
        from jobs.log_ab import log_ab_result

        def log_fn(result, folder):
            return log_ab_result(result, folder)

    result = run_ab(
        split,
        a,
        b,
        stage=stage,  # type: ignore[arg-type]  # typer gives str; callee checks it
        stats=StatsConfig(n_bootstrap=bootstrap, primary=test, seed=seed),  # type: ignore[arg-type]  # typer gives str; callee checks it
        ope=OPEConfig(impressions=impressions, clip=clip),
        out=out,
        log_fn=log_fn,
        data=data,
    )
    for line in result.verdicts():
        typer.echo(line)
    typer.echo(f"report: {out / 'report.md'}")


@app.command("embed")
def embed_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (items + interactions)."),
    encoder: str = typer.Option(
        "champion",
        "--encoder",
        "-e",
        help="Registry reference (champion, "
        "models:/recsys-encoder@champion, models:/recsys-encoder/3) or a bundle/run folder.",
    ),
    store: Path = typer.Option(..., "--store", help="Nightly store folder: embeddings/, index/ (CURRENT), encoders/."),
    active_days: float = typer.Option(
        30.0, "--active-days", help="Encode users active within this many days of the newest interaction."
    ),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data actors)."),
    int8: bool = typer.Option(False, "--int8", help="Dynamic int8 encoder on CPU (vectors kept apart from fp32)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Texts a forward pass (default 128 CPU, 512 CUDA)."
    ),
    keep: int = typer.Option(3, "--keep", help="Index versions to keep."),
    shard_size: int = typer.Option(4096, "--shard-size", help="Items a store shard (the resume unit)."),
    fp16: bool = typer.Option(False, "--fp16", help="Store item vectors as fp16 (half the disk)."),
    index_kind: str = typer.Option("auto", "--index-kind", help="auto, flat, ivf_flat, ivf_pq or hnsw."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: CUDA when available)."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster (default: RAY_ADDRESS or local)."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Ray encoder actors (default: one a GPU)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    log: bool = typer.Option(True, "--log/--no-log", help="Log the run to MLflow (experiment nightly-embed)."),
    log_index: bool = typer.Option(False, "--log-index", help="Also log the index files to MLflow (large)."),
) -> None:
    """Nightly job: encode new/changed items and active users, publish a new index version atomically."""
    from jobs.nightly_embed import EmbedConfig, Engine, LocalEngine, run_nightly
    from recsys.errors import ConfigError

    config = EmbedConfig(
        active_days=active_days,
        int8=int8,
        batch_size=batch_size,
        shard_size=shard_size,
        keep=keep,
        store_dtype="float16" if fp16 else "float32",
        index={"kind": index_kind},
        device=device,
        threads=threads,
        progress=progress,
        log=log,
        log_index_files=log_index,
    )
    chosen: Engine
    if engine == "ray":
        from jobs.ray_engine import RayEngine

        chosen = RayEngine(address=ray_address, concurrency=concurrency, batch_size=batch_size)
    elif engine == "local":
        chosen = LocalEngine(batch_size)
    else:
        raise ConfigError(f"--engine must be local or ray, got {engine!r}")
    report = run_nightly(data, encoder, store, config, engine=chosen)
    typer.echo(report.summary_line())


@app.command("serve")
def serve_command(
    store: Path = typer.Option(..., "--store", help="Nightly store folder (index/ with CURRENT, encoders/)."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder: titles, filters, histories, popularity."),
    encoder: str = typer.Option(
        "champion",
        "--encoder",
        "-e",
        help="Registry reference (champion, "
        "models:/recsys-encoder@champion) or an encoder folder; an alias is followed.",
    ),
    ranker: str = typer.Option("champion", "--ranker", help="Ranker alias/reference, or 'none' for retrieval order."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 for all)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", help="uvicorn worker processes (each loads its own models)."),
    poll_interval: float = typer.Option(5.0, "--poll-interval", help="Seconds between hot-swap checks."),
    api_key: list[str] | None = typer.Option(
        None,
        "--api-key",
        help="Accepted API key; repeatable. Also read from RECSYS_API_KEYS (comma-separated). None: /v1/ is open.",
    ),
    candidates: int = typer.Option(200, "--candidates", help="FAISS candidates handed to the ranker."),
    max_k: int = typer.Option(1000, "--max-k", help="Largest k a request may ask for."),
    device: str | None = typer.Option(None, "--device", help="Encoder device (default: CUDA when available)."),
    threads: int | None = typer.Option(None, "--threads", help="torch and FAISS CPU threads (1 on small boxes)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    event_log: Path | None = typer.Option(
        None,
        "--event-log",
        help="SQLite log of POST /v1/events (default: events/events.sqlite in the store folder).",
    ),
) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn) with hot swap of new index/model versions."""
    import os

    from recsys.serving.config import ServingConfig
    from recsys.serving.server import ENV_KEYS, ServeOptions, parse_keys, serve

    config = ServingConfig(
        candidates=candidates,
        max_k=max_k,
        poll_interval=poll_interval,
        device=device,
        threads=threads,
        event_log=str(event_log) if event_log is not None else None,
    )
    keys = parse_keys(*(api_key or []), os.environ.get(ENV_KEYS))
    serve(
        ServeOptions(
            store=store,
            data=data,
            encoder=encoder,
            ranker=ranker,
            host=host,
            port=port,
            workers=workers,
            api_keys=keys,
            config=config,
            log_level=log_level,
        )
    )


def main() -> None:
    """Entry point: run the app, turning user-fixable errors into one line and exit status 2."""
    from recsys.errors import RecsysError

    try:
        app()
    except RecsysError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
