"""`clip-onnx embed` and `clip-onnx ray-embed`: datasets on one machine, or on a Ray cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from clip_onnx.cli.shared import BACKEND_OPTION
from clip_onnx.files import parse_bytes

# Keep in step with clip_onnx.batch.pipeline.MAX_FILE_BYTES (not imported: the CLI loads lazily).
_MAX_FILE_DEFAULT = "512M"


class _Size(click.ParamType):
    """A byte count written as 512M, 2G, 300K or a plain number; 0 means no limit (None)."""

    name = "size"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        try:
            count = parse_bytes(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return count or None


def _report(summary, failed: bool) -> None:
    """The summary line: on stdout after a clean run, on stderr (where a pipeline's logs look) when it fails."""
    click.echo(summary.line(), err=failed)
    if failed:
        sys.exit(1)


_max_file_size = click.option(
    "--max-file-size",
    "max_file_bytes",
    type=_Size(),
    default=_MAX_FILE_DEFAULT,
    show_default=True,
    help="Largest image file (or shard member) read (512M, 2G, ...; 0: no limit); a larger one fails as an item.",
)
_decode = click.option(
    "--decode",
    type=click.Choice(["exact", "draft"]),
    default="exact",
    show_default=True,
    help="'draft' decodes JPEGs at libjpeg's 1/2, 1/4 or 1/8 scale, keeping twice the model's input side: "
    "several times faster on large photos, close to but not exactly the exact vectors (docs/datasets.md).",
)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("sources", nargs=-1)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file: .parquet (id, embedding) or .npy (with OUT.ids.txt beside it).",
)
@click.option(
    "--tower",
    type=click.Choice(["image", "text", "both"]),
    default=None,
    help="Which tower embeds [default: text for --text, --text-file or a string --column; else image]. "
    "'both' (shards only) writes each sample's image and caption as image_embedding and text_embedding.",
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
@click.option("--column", default=None, help="The column to embed of parquet/CSV/TSV SOURCEs; ids are FILE:ROW.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "npy"]),
    default=None,
    help="Output format [default: from OUT's suffix; parquet unless it ends in .npy].",
)
@click.option("--batch-size", default=32, show_default=True, help="Items per model call.")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Threads that each take a batch through decoding and the model [default: CPU count].",
)
@click.option("--resume", is_flag=True, help="Continue a stopped run into OUT from its OUT.partial/ folder.")
@click.option("--skip-bad", is_flag=True, help="Exit 0 even when some items failed (they are still recorded).")
@click.option(
    "--part-size",
    default=4096,
    show_default=True,
    help="Items per committed part: a stopped run resumes from its last whole part.",
)
@_max_file_size
@_decode
@BACKEND_OPTION
def embed(
    bundle: Path,
    sources,
    out: Path,
    tower,
    images,
    texts,
    text_files,
    column,
    fmt,
    batch_size: int,
    workers,
    resume: bool,
    skip_bad: bool,
    part_size: int,
    max_file_bytes,
    decode: str,
    backend: str,
) -> None:
    """Embed images or texts with BUNDLE into OUT: L2-normalised float32 rows, in source order, with ids.

    \b
    SOURCE is any mix of image files, folders (walked recursively, images by
    extension, hidden entries skipped), quoted glob patterns ('photos/**/*.jpg'),
    @list.txt (one image path per line), webdataset shards (.tar files, quoted
    globs or brace ranges: 'shards/{00000..00099}.tar'; ids SHARD:KEY; parquet
    output keeps their url and caption) and, with --column, parquet/CSV/TSV
    tables (a string column of texts or image paths, or a binary column of
    encoded images).
    \b
    Files that cannot be read or decoded are skipped and listed in
    OUT.errors.jsonl (id, error, message): missing, unreadable, not a regular
    file (FIFO, socket, device, or a link to one), over --max-file-size, or
    not an image.  The exit code is then 1 and the summary goes to stderr,
    unless --skip-bad is given.  OUT appears only when complete; a killed run
    keeps its finished parts in OUT.partial/ and `--resume` continues it,
    embedding again any part that was damaged meanwhile.
    \b
    Exit codes: 0 done; 1 an error, or items failed (without --skip-bad);
    2 the command line itself is wrong (an unknown option, a missing argument).
    """
    from tqdm import tqdm

    from clip_onnx.batch import EmbedOptions, embed_dataset

    options = EmbedOptions(
        tower=tower,
        fmt=fmt,
        batch_size=batch_size,
        workers=workers,
        resume=resume,
        part_size=part_size,
        max_file_bytes=max_file_bytes,
        backend=backend,
        decode=decode,
    )

    bars = []

    def advance(done: int, total: int) -> None:
        if not bars:  # made at the first report, so that a resumed run's rate counts only its own items
            bars.append(
                tqdm(
                    total=total,
                    initial=done,
                    desc="embed",
                    unit="item",
                    file=sys.stderr,
                    disable=not sys.stderr.isatty(),
                    dynamic_ncols=True,
                )
            )
        bars[0].update(done - bars[0].n)

    try:
        summary = embed_dataset(
            bundle,
            out,
            options,
            sources=sources,
            images=images,
            texts=texts,
            text_files=text_files,
            column=column,
            progress=advance,
        )
    finally:
        for bar in bars:
            bar.close()
    _report(summary, bool(summary.failed) and not skip_bad)


@click.command("ray-embed")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("source")
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder of parquet files (id, embedding, error); must not exist yet.",
)
@click.option("--address", default=None, help="Ray cluster to join, e.g. 'auto' [default: start a local Ray].")
@click.option(
    "--actors",
    type=int,
    default=None,
    help="Actors in the pool, each with its own model [default: as many as fit with one CPU of the cluster left "
    "for the driver, reads and writes].",
)
@click.option(
    "--cpus-per-actor",
    type=float,
    default=1,
    show_default=True,
    help="CPUs each actor reserves; ONNX Runtime runs that many threads.",
)
@click.option(
    "--column",
    default=None,
    help="Parquet column to embed: binary (encoded images) or strings (texts) [default: bytes or text].",
)
@click.option(
    "--tower",
    type=click.Choice(["image", "text", "both"]),
    default=None,
    help="For webdataset shards: embed the images [default], the captions, or both into one row.",
)
@click.option("--batch-size", type=int, default=None, help="Rows per model call [default: 32 images, 256 texts].")
@click.option("--skip-bad", is_flag=True, help="Exit 0 even when some rows failed (they keep a null embedding).")
@_max_file_size
@_decode
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    help="Seconds without a row embedded anywhere before the job is stopped (0: wait forever).",
)
def ray_embed(
    bundle: Path,
    source: str,
    out: Path,
    address,
    actors,
    cpus_per_actor: float,
    column,
    tower,
    batch_size,
    skip_bad: bool,
    max_file_bytes,
    decode: str,
    stall_timeout: float,
) -> None:
    """Embed SOURCE with BUNDLE on a Ray cluster (Ray Data), writing parquet to the folder OUT.

    \b
    SOURCE is a folder of images (read as encoded bytes, decoded in the actors;
    ids are the paths); webdataset shards (a .tar path, quoted glob or brace
    range 'shards/{00000..00099}.tar', one read task per shard; ids SHARD:KEY,
    with url and caption columns, as `embed` writes them); or, with --column or
    a .parquet name, parquet with a binary column of images or a string column
    of texts (ids from its `id` column, else the text).  Rows that fail keep a null embedding and their
    reason in the `error` column; files that are not regular files, or are over
    --max-file-size, fail as rows.  The bundle and SOURCE must be readable at
    the same paths on every node, and OUT must be on a shared file system.
    \b
    A node lost mid-job is survived (Ray restarts its actors elsewhere and
    reruns its tasks; every row is written once).  A job that embeds nothing
    for --stall-timeout seconds is stopped, and nothing is written.  Exit codes
    as for `embed`.
    """
    from clip_onnx.ray import run_ray_embed

    summary = run_ray_embed(
        bundle,
        source,
        out,
        address=address,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        column=column,
        batch_size=batch_size,
        max_file_bytes=max_file_bytes,
        stall_timeout=stall_timeout,
        tower=tower,
        decode=decode,
    )
    _report(summary, bool(summary.failed) and not skip_bad)
