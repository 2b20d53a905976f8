"""merc-toolkit pipeline: corpora -> features cache -> trainer -> reports."""
__version__ = "0.1.0"
