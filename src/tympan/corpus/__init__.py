"""Corpus runs: score or embed up to millions of files into Parquet shards, resumably.

A manifest (a folder tree, a CSV with a ``path`` column, or a text file of
paths) is read as a stream and cut into shards of ``shard_files`` files in
manifest order. Each file is planned into work units of whole windows
(:mod:`~tympan.corpus.units`), units are decoded (:mod:`~tympan.corpus.decode`)
and scored or embedded by a model loaded once per worker
(:mod:`~tympan.corpus.scoring`), and each shard's rows and error rows are
written atomically (:mod:`~tympan.corpus.shards`). Engines: a local process
pool (:mod:`~tympan.corpus.local`) or Ray Data (:mod:`~tympan.corpus.ray_engine`,
the ``tympan[ray]`` extra); :func:`~tympan.corpus.run.run_corpus` orchestrates.
"""
