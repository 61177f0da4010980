"""`clip-onnx embed` and `clip-onnx ray-embed`: click commands that map their options to one library call.

They live here rather than in ``clip_onnx/cli.py``, which registers them, to keep that module within
the size limit; the library they call is imported only when a command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click


@click.command("embed")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("sources", nargs=-1)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file: .parquet (id, embedding) or .npy (with OUT.ids.txt beside it).",
)
@click.option(
    "--tower",
    type=click.Choice(["image", "text"]),
    help="Which tower embeds [default: text for --text, --text-file or a string --column; else image].",
)
@click.option("--image", "images", multiple=True, help="An image file (repeatable).")
@click.option("--text", "texts", multiple=True, help="A text (repeatable); its id is the text itself.")
@click.option(
    "--text-file",
    "text_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A file of texts, one per line (repeatable); ids are FILE:LINE.",
)
@click.option("--column", help="The column to embed of parquet/CSV/TSV SOURCEs; ids are FILE:ROW.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "npy"]),
    help="Output format [default: from OUT's suffix; parquet unless it ends in .npy].",
)
@click.option("--batch-size", default=32, show_default=True, help="Items per model call.")
@click.option(
    "--workers", type=int, help="Threads that each take a batch through decoding and the model [default: CPU count]."
)
@click.option("--resume", is_flag=True, help="Continue a stopped run into OUT from its OUT.partial/ folder.")
@click.option("--skip-bad", is_flag=True, help="Exit 0 even when some items failed (they are still recorded).")
@click.option(
    "--part-size",
    default=4096,
    show_default=True,
    help="Items per committed part: a stopped run resumes from its last whole part.",
)
def embed_command(bundle: Path, sources: tuple[str, ...], out: Path, skip_bad: bool, **options) -> None:
    """Embed images or texts with BUNDLE into OUT: L2-normalised float32 rows, in source order, with ids.

    \b
    SOURCE is any mix of image files, folders (walked recursively, images by
    extension, hidden entries skipped), quoted glob patterns ('photos/**/*.jpg'),
    @list.txt (one image path per line) and, with --column, parquet/CSV/TSV
    tables (a string column of texts or image paths, or a binary column of
    encoded images).
    \b
    Files that cannot be read or decoded are skipped and listed in
    OUT.errors.jsonl (id, error, message); the exit code is then 1 unless
    --skip-bad is given.  OUT appears only when complete; a killed run keeps
    its finished parts in OUT.partial/ and `--resume` continues it.
    """
    from clip_onnx.batch.embed import embed_dataset

    with _progress("embed") as progress:
        _finish(embed_dataset(bundle, out, sources=sources, progress=progress, **options), skip_bad)


@click.command("ray-embed")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("source")
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder of parquet files (id, embedding, error); must not exist yet.",
)
@click.option("--address", help="Ray cluster to join, e.g. 'auto' [default: start a local Ray].")
@click.option(
    "--actors",
    type=int,
    help="Actors in the pool, each with its own model [default: as many as fit with one CPU left free].",
)
@click.option(
    "--cpus-per-actor",
    type=float,
    default=1,
    show_default=True,
    help="CPUs each actor reserves; ONNX Runtime runs that many threads.",
)
@click.option(
    "--column", help="Parquet column to embed: binary (encoded images) or strings (texts) [default: bytes or text]."
)
@click.option("--batch-size", type=int, help="Rows per model call [default: 32 images, 256 texts].")
@click.option("--skip-bad", is_flag=True, help="Exit 0 even when some rows failed (they keep a null embedding).")
def ray_embed_command(bundle: Path, source: str, out: Path, skip_bad: bool, **options) -> None:
    """Embed SOURCE with BUNDLE on a Ray cluster (Ray Data), writing parquet to the folder OUT.

    \b
    SOURCE is a folder of images (read as encoded bytes, decoded in the actors;
    ids are the paths) or, with --column or a .parquet name, parquet with a
    binary column of images or a string column of texts (ids from its `id`
    column, else the text).  Rows that fail keep a null embedding and their
    reason in the `error` column.  The bundle and SOURCE must be readable at
    the same paths on every node, and OUT must be on a shared file system.
    """
    from clip_onnx.ray import run_ray_embed

    _finish(run_ray_embed(bundle, source, out, **options), skip_bad)


@contextmanager
def _progress(desc: str) -> Iterator[Callable[[int, int], None]]:
    """``progress(done, total)`` for a library call: a tqdm bar on a terminal, made at the first report."""
    from tqdm import tqdm

    bars = []

    def progress(done: int, total: int) -> None:
        if not bars:  # a resumed run's rate then counts only its own items
            bars.append(
                tqdm(
                    total=total,
                    initial=done,
                    desc=desc,
                    unit="item",
                    file=sys.stderr,
                    disable=not sys.stderr.isatty(),
                    dynamic_ncols=True,
                )
            )
        bars[0].update(done - bars[0].n)

    try:
        yield progress
    finally:
        for bar in bars:
            bar.close()


def _finish(summary, skip_bad: bool) -> None:
    """Print the run's summary line; exit 1 when items failed, unless the user said that is fine."""
    click.echo(summary.line())
    if summary.failed and not skip_bad:
        sys.exit(1)
