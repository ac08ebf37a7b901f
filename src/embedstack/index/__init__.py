"""Storage layer: document store, dense, lexical (BM25), sparse and multi-vector indexes."""
