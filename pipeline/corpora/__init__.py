"""Corpus readers register themselves on import (see ``pipeline/corpora/base.py``)."""
from pipeline.corpora.base import CORPORA, CorpusData, CorpusError, CorpusReader, ReadReport, Utterance, read_corpus
from pipeline.corpora import meld, iemocap, mosi  # noqa: F401  (register the readers)
from pipeline.corpora import mustard, urfunny  # noqa: F401  (register the readers)

__all__ = ["CORPORA", "CorpusData", "CorpusError", "CorpusReader", "ReadReport", "Utterance", "read_corpus"]
